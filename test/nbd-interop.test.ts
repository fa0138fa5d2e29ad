/**
 * `diskchain serve` against Debian's NBD clients, as users run them: qemu-img (compare, convert to raw
 * and qcow2, map), qemu-io writing into a writable export (aligned and not, FUA, write-zeroes, discard)
 * with the file then read back by qemu-img and libvhdi, nbdinfo --map against `diskchain map`, nbdcopy
 * both ways, and TLS (NBD_OPT_STARTTLS) with nbdinfo and qemu-img's tls-creds.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { convert } from '../src/api/convert.js';
import { createDisk } from '../src/api/create.js';
import { openChain } from '../src/chain/open-chain.js';
import { buildChain } from './helpers/merge-chain.js';
import { pyvhdiBytes, qemuImg, requireOracle } from './helpers/oracles.js';
import { CLI, serveCli } from './helpers/serve-cli.js';
import { makeCertificates } from './helpers/tls-certs.js';
import { assertBytesEqual, MIB, randomBytesFrom, sha256, tempDir } from './helpers/vhdx-util.js';

const SIZE = 24 * MIB;
let dir: string;
let cleanup: () => void;
let chains: Record<'vhdx' | 'vhd', string[]>;
before(async () => {
  ({ dir, cleanup } = tempDir('diskchain-nbd-interop-'));
  chains = { vhdx: await buildChain(join(dir, 'vhdx'), 'vhdx', 61, SIZE), vhd: await buildChain(join(dir, 'vhd'), 'vhd', 62, SIZE) };
});
after(() => cleanup?.());

let socketNo = 0;
const sock = (): string => join(dir, `s${++socketNo}.sock`);
const run = (cmd: string, args: string[]): string => execFileSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * MIB });

async function flatCopy(leaf: string): Promise<string> {
  const out = join(dir, `flat${++socketNo}.raw`);
  await convert(leaf, out, { format: 'raw' });
  return out;
}

for (const format of ['vhdx', 'vhd'] as const) {
  test(`${format}: qemu-img compares the served 4-layer chain equal to a flat copy, and converts it to raw and qcow2`, async (t) => {
    if (!requireOracle(t, 'qemu-img')) return;
    const leaf = chains[format][3]!;
    const flat = await flatCopy(leaf);
    const served = await serveCli([leaf, '--socket', sock()]);
    try {
      assert.match(qemuImg(['compare', '-f', 'raw', flat, served.uri]), /Images are identical/);
      const raw = join(dir, `${format}-out.raw`);
      const qcow2 = join(dir, `${format}-out.qcow2`);
      qemuImg(['convert', '-O', 'raw', served.uri, raw]);
      qemuImg(['convert', '-O', 'qcow2', served.uri, qcow2]);
      assert.equal(sha256(readFileSync(raw)), sha256(readFileSync(flat)));
      assert.match(qemuImg(['compare', '-f', 'raw', '-F', 'qcow2', flat, qcow2]), /Images are identical/);
    } finally {
      assert.equal(await served.stop(), 0, served.stderr());
    }
  });
}

test('nbdinfo --map shows the allocation `diskchain map` shows (data; zero and absent as holes)', async (t) => {
  if (!requireOracle(t, 'nbdinfo')) return;
  const leaf = chains.vhdx[3]!;
  const served = await serveCli([leaf, '--socket', sock()]);
  try {
    const nbd = JSON.parse(run('nbdinfo', ['--map', '--json', served.uri])) as Array<{ offset: number; length: number; type: number }>;
    const ours = JSON.parse(run('node', [CLI, 'map', leaf, '--json'])) as { extents: Array<{ offset: number; length: number; state: string }> };
    const collapse = (xs: Array<[number, number, number]>): Array<[number, number, number]> =>
      xs.reduce<Array<[number, number, number]>>((out, [o, l, f]) => {
        const last = out[out.length - 1];
        if (last && last[2] === f) last[1] += l;
        else out.push([o, l, f]);
        return out;
      }, []);
    const expected = collapse(ours.extents.map((e) => [e.offset, e.length, e.state === 'data' ? 0 : 3]));
    assert.deepEqual(collapse(nbd.map((e) => [e.offset, e.length, e.type])), expected);
    assert.ok(expected.some((e) => e[2] === 3) && expected.some((e) => e[2] === 0), 'the chain has both data and holes');
  } finally {
    assert.equal(await served.stop(), 0);
  }
});

test('nbdcopy both ways: out of a served chain, and into a writable export', async (t) => {
  if (!requireOracle(t, 'nbdcopy')) return;
  const leaf = chains.vhd[3]!;
  const flat = await flatCopy(leaf);
  const served = await serveCli([leaf, '--socket', sock()]);
  const out = join(dir, 'nbdcopy-out.raw');
  try {
    run('nbdcopy', [served.uri, out]);
  } finally {
    assert.equal(await served.stop(), 0);
  }
  assert.equal(sha256(readFileSync(out)), sha256(readFileSync(flat)));
  // Into a fresh dynamic VHDX: holes in the source arrive as write-zeroes and stay unallocated.
  const target = join(dir, 'nbdcopy-in.vhdx');
  await (await createDisk(target, 'vhdx', { diskType: 'dynamic', virtualSize: SIZE, blockSize: MIB })).close();
  const writable = await serveCli([target, '--socket', sock(), '--writable']);
  try {
    run('nbdcopy', ['--flush', out, writable.uri]);
  } finally {
    assert.equal(await writable.stop(), 0, writable.stderr());
  }
  const copy = await openChain(target);
  const got = new Uint8Array(SIZE);
  await copy.read(got, 0);
  const allocated = await copy.leaf.allocatedBytes();
  await copy.close();
  assertBytesEqual(got, readFileSync(out), 'the VHDX nbdcopy wrote into');
  const source = readFileSync(out);
  let dataBytes = 0;
  for (let at = 0; at < SIZE; at += MIB) if (!source.subarray(at, at + MIB).equals(Buffer.alloc(MIB))) dataBytes += MIB;
  assert.ok(allocated <= dataBytes, `blocks of zeros stayed unallocated (${allocated} bytes allocated, ${dataBytes} hold data)`);
});

/** qemu-io commands and what they do to a model of the disk; discarded bytes may read as before or as zeros. */
interface Scenario {
  cmds: string[];
  apply(model: Uint8Array, loose: Uint8Array): void;
}

function scenario(): Scenario {
  const cmds: string[] = [];
  const steps: Array<(m: Uint8Array, loose: Uint8Array) => void> = [];
  const write = (flag: string, at: number, length: number, pattern: number): void => {
    cmds.push(`write ${flag} -P ${pattern} ${at} ${length}`.replace('  ', ' '));
    steps.push((m, l) => (m.fill(pattern, at, at + length), l.fill(0, at, at + length)));
  };
  const zero = (unmap: boolean, at: number, length: number): void => {
    cmds.push(`write -z ${unmap ? '-u ' : ''}${at} ${length}`);
    steps.push((m, l) => (m.fill(0, at, at + length), l.fill(0, at, at + length)));
  };
  write('', 0, 64 * 1024, 0x5a); // aligned
  write('', 1000, 3000, 0x33); // unaligned both ends
  write('-f', 5 * MIB + 17, 200_000, 0x77); // FUA, unaligned, across nothing in particular
  write('', 3 * MIB - 512, 2 * MIB + 1024, 0x44); // across block boundaries
  zero(true, 8 * MIB, 2 * MIB); // whole blocks: zero blocks where the format has them
  zero(false, 11 * MIB + 100, 300_000); // NO_HOLE, unaligned
  zero(true, 13 * MIB + 4096, 8192); // inside a block
  cmds.push(`discard ${16 * MIB} ${2 * MIB}`);
  steps.push((_m, l) => l.fill(1, 16 * MIB, 18 * MIB));
  write('-f', 17 * MIB, 4096, 0x99); // a write into the discarded range is defined again
  cmds.push('flush');
  return { cmds, apply: (m, l) => steps.forEach((s) => s(m, l)) };
}

function assertAgainstModel(actual: Uint8Array, model: Uint8Array, loose: Uint8Array, what: string): void {
  for (let i = 0; i < model.length; i++) {
    if (actual[i] === model[i]) continue;
    if (loose[i] && actual[i] === 0) continue;
    assert.fail(`${what}: byte ${i} is ${actual[i]}, expected ${model[i]}${loose[i] ? ' (or 0: discarded)' : ''}`);
  }
}

test('qemu-io writes into a writable dynamic VHDX export (aligned and not, FUA, write-zeroes, discard); qemu-img and libvhdi read the file back', async (t) => {
  if (!requireOracle(t, 'qemu-io') || !requireOracle(t, 'qemu-img') || !requireOracle(t, 'pyvhdi')) return;
  const target = join(dir, 'qemu-io.vhdx');
  const d = await createDisk(target, 'vhdx', { diskType: 'dynamic', virtualSize: SIZE, blockSize: MIB });
  const initial = randomBytesFrom(71, SIZE);
  initial.fill(0, 20 * MIB); // the tail stays unallocated
  await d.write(initial.subarray(0, 20 * MIB), 0);
  await d.close();
  const s = scenario();
  const served = await serveCli([target, '--socket', sock(), '--writable']);
  try {
    const r = spawnSync('qemu-io', ['-f', 'raw', served.uri, ...s.cmds.flatMap((c) => ['-c', c])], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.doesNotMatch(r.stdout + r.stderr, /error|failed/i, r.stdout + r.stderr);
  } finally {
    assert.equal(await served.stop(), 0, served.stderr());
  }
  const model = new Uint8Array(initial);
  const loose = new Uint8Array(SIZE);
  s.apply(model, loose);
  qemuImg(['check', '-f', 'vhdx', target]);
  const viaQemu = join(dir, 'qemu-io-back.raw');
  qemuImg(['convert', '-f', 'vhdx', '-O', 'raw', target, viaQemu]);
  assertAgainstModel(new Uint8Array(readFileSync(viaQemu)), model, loose, 'qemu-img reading the file');
  assertAgainstModel(pyvhdiBytes(target, []), model, loose, 'libvhdi reading the file');
});

test('qemu-io writes into a writable differencing VHDX export; libvhdi reads the chain back', async (t) => {
  if (!requireOracle(t, 'qemu-io') || !requireOracle(t, 'pyvhdi')) return;
  const paths = await buildChain(join(dir, 'qemu-io-diff'), 'vhdx', 63, SIZE);
  const leaf = paths[3]!;
  const before = await openChain(leaf);
  const model = new Uint8Array(SIZE);
  await before.read(model, 0);
  const parentOf8 = new Uint8Array(2 * MIB);
  await before.read(parentOf8, 8 * MIB);
  const leafHeld8 = (await before.leaf.map(8 * MIB, 2 * MIB)).filter((e) => e.state !== 'transparent');
  await before.close();
  const s = scenario();
  const served = await serveCli([leaf, '--socket', sock(), '--writable']);
  try {
    const r = spawnSync('qemu-io', ['-f', 'raw', served.uri, ...s.cmds.flatMap((c) => ['-c', c])], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
  } finally {
    assert.equal(await served.stop(), 0, served.stderr());
  }
  const loose = new Uint8Array(SIZE);
  s.apply(model, loose);
  const ours = await openChain(leaf);
  const got = new Uint8Array(SIZE);
  await ours.read(got, 0);
  const zeroBlocks = (await ours.leaf.map(8 * MIB, 2 * MIB)).filter((e) => e.state === 'zero');
  await ours.close();
  assertAgainstModel(got, model, loose, 'diskchain reading the chain');
  const viaLibvhdi = pyvhdiBytes(leaf, [paths[2]!, paths[1]!, paths[0]!]);
  // MS-VHDX §2.5.1.1: a PAYLOAD_BLOCK_ZERO block reads as zeros. libvhdi 20210425 reads it in a
  // differencing disk as the parent's data; there, either answer is accepted (see docs/formats/vhdx.md).
  for (const z of zeroBlocks) {
    const a = z.offset - 8 * MIB;
    const lib = viaLibvhdi.subarray(z.offset, z.offset + z.length);
    if (!lib.every((b) => b === 0)) assertBytesEqual(lib, parentOf8.subarray(a, a + z.length), 'libvhdi on a zero block: the parent or zeros');
    viaLibvhdi.fill(0, z.offset, z.offset + z.length);
  }
  assert.ok(zeroBlocks.length > 0 || leafHeld8.length > 0, 'write -z -u over whole blocks made zero blocks (or zeroed the leaf\'s own)');
  assertAgainstModel(viaLibvhdi, model, loose, 'libvhdi reading the chain');
});

test('TLS: clients must start TLS; nbdinfo and qemu-img (tls-creds-x509) read the chain through it; plain clients are refused', async (t) => {
  if (!requireOracle(t, 'openssl') || !requireOracle(t, 'nbdinfo') || !requireOracle(t, 'qemu-img')) return;
  const certs = makeCertificates(dir);
  const leaf = chains.vhdx[3]!;
  const flat = await flatCopy(leaf);
  const served = await serveCli([leaf, '--port', '0', '--tls-cert', join(certs, 'server-cert.pem'), '--tls-key', join(certs, 'server-key.pem'), '--export-name', 'disk']);
  try {
    assert.equal(served.info.tls, true);
    const port = served.info.port!;
    assert.match(served.uri, /^nbds:\/\/127\.0\.0\.1:\d+\/disk$/);
    const info = run('nbdinfo', ['--json', `nbds://127.0.0.1:${port}/disk?tls-certificates=${certs}`]);
    assert.equal((JSON.parse(info) as { exports: Array<{ 'export-size': number }> }).exports[0]!['export-size'], SIZE);
    const plain = spawnSync('nbdinfo', [`nbd://127.0.0.1:${port}/disk`], { encoding: 'utf8' });
    assert.notEqual(plain.status, 0, 'a client without TLS gets nothing');
    const out = join(dir, 'tls-out.raw');
    const object = `tls-creds-x509,id=tls0,endpoint=client,dir=${certs}`;
    qemuImg(['convert', '--object', object, '--image-opts', `driver=nbd,host=127.0.0.1,port=${port},export=disk,tls-creds=tls0`, '-O', 'raw', out]);
    assert.equal(sha256(readFileSync(out)), sha256(readFileSync(flat)));
  } finally {
    assert.equal(await served.stop(), 0, served.stderr());
  }
});
