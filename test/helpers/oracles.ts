import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import type { TestContext } from 'node:test';

/** The independent readers we check ourselves against. */
export const ORACLES = ['qemu-img', 'qemu-io', 'qemu-system-x86_64', 'qemu-nbd', 'nbdkit', 'pyvhdi', 'vhdiinfo', 'mkfs.fat', 'mtools', 'nbdinfo', 'nbdcopy', 'openssl', 'chromium'] as const;
export type Oracle = (typeof ORACLES)[number];

/** The Debian packages the tests need, one source for CI, these helpers and the README. */
export const APT_PACKAGES_FILE = new URL('../../../.ci/apt-packages', import.meta.url).pathname;

export interface AptPackage {
  name: string;
  /** The oracles the package gives (none for a tool such as lz4). */
  provides: string[];
}

/** .ci/apt-packages: `package: oracle oracle…` a line, `#` comments. */
export function aptPackages(): AptPackage[] {
  return readFileSync(APT_PACKAGES_FILE, 'utf8')
    .split('\n')
    .map((line) => line.replace(/#.*/, '').trim())
    .filter(Boolean)
    .map((line) => {
      const [name, provides = ''] = line.split(':');
      return { name: name!.trim(), provides: provides.split(/\s+/).filter(Boolean) };
    });
}

const PY = '/usr/bin/python3';
/** Debian's chromium, driven by playwright-core (playwright's own browser download is not available). */
export const CHROMIUM = '/usr/bin/chromium';

function present(oracle: Oracle): boolean {
  switch (oracle) {
    case 'qemu-img':
    case 'qemu-io':
    case 'qemu-system-x86_64':
    case 'qemu-nbd':
    case 'nbdkit':
      return spawnSync(oracle, ['--version']).status === 0;
    case 'vhdiinfo':
      return spawnSync('vhdiinfo', ['-V']).status === 0;
    case 'pyvhdi':
      return existsSync(PY) && spawnSync(PY, ['-c', 'import pyvhdi']).status === 0;
    case 'mkfs.fat':
      return spawnSync('mkfs.fat', ['--help']).error === undefined;
    case 'mtools':
      return spawnSync('mdir', ['-V']).error === undefined;
    case 'chromium':
      return spawnSync(CHROMIUM, ['--version']).status === 0;
    case 'nbdinfo':
    case 'nbdcopy':
    case 'openssl':
      return spawnSync(oracle, ['--version']).status === 0 || spawnSync(oracle, ['version']).status === 0;
  }
}

const cache = new Map<Oracle, boolean>();

/**
 * Returns true when the oracle is installed. When it is not: in CI (CI=true) the test fails;
 * elsewhere it is skipped with a loud message.
 */
export function requireOracle(t: TestContext, oracle: Oracle): boolean {
  if (!cache.has(oracle)) cache.set(oracle, present(oracle));
  if (cache.get(oracle)) return true;
  const pkg = aptPackages().find((p) => p.provides.includes(oracle))?.name ?? `the packages in ${APT_PACKAGES_FILE}`;
  const msg = `oracle ${oracle} is not installed (apt-get install ${pkg}; the README's test command installs every oracle)`;
  if (process.env.CI === 'true') throw new Error(`${msg}; CI must have it`);
  console.error(`SKIPPED LOUDLY: ${msg}`);
  t.skip(msg);
  return false;
}

export function qemuImg(args: string[]): string {
  return execFileSync('qemu-img', args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
}

/** pyvhdi refuses `parent` for `child` because the identities differ. */
export function pyvhdiRefuses(child: string, parent: string): boolean {
  const script = 'import sys, pyvhdi\nc = pyvhdi.file(); c.open(sys.argv[1])\np = pyvhdi.file(); p.open(sys.argv[2])\nc.set_parent(p)\n';
  const r = spawnSync('/usr/bin/python3', ['-c', script, child, parent], { encoding: 'utf8' });
  return r.status !== 0 && /mismatch/.test(r.stderr);
}

/** Python that opens argv[1:] with pyvhdi as a chain (each file's parent next) and names the top `top`. */
const PYVHDI_CHAIN = `
import sys, hashlib, pyvhdi
paths = sys.argv[1:]
files = []
for p in paths:
    f = pyvhdi.file(); f.open(p); files.append(f)
for i in range(len(files) - 1):
    files[i].set_parent(files[i + 1])
top = files[0]
size = top.get_media_size()
def chunks():
    off = 0
    while off < size:
        n = min(4 << 20, size - off)
        top.seek_offset(off, 0)
        data = top.read_buffer(n)
        if len(data) != n: raise SystemExit('short read at %d' % off)
        yield data; off += n
`;

/**
 * SHA-256 of the whole virtual disk as pyvhdi reads it. `parents` lists the chain above `path`,
 * nearest parent first; each is opened and linked with set_parent.
 */
export function pyvhdiSha256(path: string, parents: string[] = []): string {
  const script = `${PYVHDI_CHAIN}
h = hashlib.sha256()
for data in chunks(): h.update(data)
print(h.hexdigest())
`;
  return execFileSync(PY, ['-c', script, path, ...parents], { encoding: 'utf8' }).trim();
}

/** The whole virtual disk as pyvhdi reads it (small disks: it passes through memory). */
export function pyvhdiBytes(path: string, parents: string[] = []): Uint8Array {
  const script = `${PYVHDI_CHAIN}
for data in chunks(): sys.stdout.buffer.write(data)
`;
  return new Uint8Array(execFileSync(PY, ['-c', script, path, ...parents], { maxBuffer: 1024 * 1024 * 1024 }));
}
