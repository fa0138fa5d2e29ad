/**
 * `diskchain serve` as a command: what it prints once it listens, the addresses it refuses and why, the
 * disks it will not serve writable, and a clean stop on SIGINT / SIGTERM that leaves every write the
 * clients were answered for in the file.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createChild, createDisk } from '../src/api/create.js';
import { openChain } from '../src/chain/open-chain.js';
import { NbdClient } from './helpers/nbd-client.js';
import { requireOracle } from './helpers/oracles.js';
import { CLI, serveCli } from './helpers/serve-cli.js';
import { makeCertificates, makeClientCertificate } from './helpers/tls-certs.js';
import { assertBytesEqual, MIB, randomBytesFrom, tempDir } from './helpers/vhdx-util.js';

let dir: string;
let cleanup: () => void;
let base: string;
let leaf: string;
before(async () => {
  ({ dir, cleanup } = tempDir('diskchain-nbd-cli-'));
  base = join(dir, 'base.vhdx');
  leaf = join(dir, 'leaf.avhdx');
  const b = await createDisk(base, 'vhdx', { diskType: 'dynamic', virtualSize: 8 * MIB, blockSize: MIB });
  await b.write(randomBytesFrom(1, MIB), 0);
  await b.close();
  await (await createChild(leaf, base)).close();
});
after(() => cleanup?.());

const serveSync = (args: string[]) => spawnSync('node', [CLI, 'serve', ...args], { encoding: 'utf8', timeout: 20_000 });

test('serve prints one JSON line once it listens; writes answered before SIGTERM are in the file; exit 0', async () => {
  const socket = join(dir, 'a.sock');
  const served = await serveCli([leaf, '--socket', socket, '--writable', '--export-name', 'now']);
  const data = randomBytesFrom(2, 3 * MIB);
  try {
    assert.deepEqual({ ...served.info, uris: undefined }, { disk: leaf, writable: true, size: 8 * MIB, socket, tls: false, uris: undefined });
    assert.equal(served.uri, `nbd+unix:///now?socket=${encodeURIComponent(socket)}`);
    const c = await NbdClient.connect(socket, { exportName: 'now' });
    await c.write(MIB + 512, data); // no flush, no FUA: the stop must flush it
    c.socket.destroy();
  } finally {
    assert.equal(await served.stop('SIGTERM'), 0, served.stderr());
  }
  const chain = await openChain(leaf);
  const got = new Uint8Array(data.length);
  await chain.read(got, MIB + 512);
  await chain.close();
  assertBytesEqual(got, data, 'the write is in the file');
  const human = spawnSync('node', [CLI, 'check', leaf], { encoding: 'utf8' });
  assert.equal(human.status, 0, human.stdout + human.stderr);
});

test('SIGINT stops it the same way; the human output names the URI', async () => {
  const socket = join(dir, 'b.sock');
  const { spawn } = await import('node:child_process');
  const proc = spawn('node', [CLI, 'serve', base, '--socket', socket], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr.on('data', (d: Buffer) => (err += d.toString()));
  try {
    while (out.split('\n').length < 3 && proc.exitCode === null) await new Promise((r) => setTimeout(r, 20));
    assert.match(out, /serving .*base\.vhdx \(read-only, 8388608 bytes\) on .*b\.sock/);
    assert.match(out, /export "base\.vhdx": nbd\+unix:\/\/\/base\.vhdx\?socket=/);
  } finally {
    proc.kill('SIGINT');
  }
  const code = await new Promise<number | null>((r) => (proc.exitCode !== null ? r(proc.exitCode) : proc.once('exit', (c) => r(c))));
  assert.equal(code, 0, err);
  assert.match(err, /stopped/);
});

test('refused: a non-loopback address without --allow-remote, --allow-remote without TLS, a socket and a port together', () => {
  const remote = serveSync([base, '--bind', '0.0.0.0', '--port', '0']);
  assert.equal(remote.status, 2, remote.stderr);
  assert.match(remote.stderr, /refusing to listen on 0\.0\.0\.0: only loopback and unix sockets/);
  const noTls = serveSync([base, '--bind', '0.0.0.0', '--port', '0', '--allow-remote']);
  assert.equal(noTls.status, 2);
  assert.match(noTls.stderr, /without TLS: NBD has no authentication/);
  const both = serveSync([base, '--socket', join(dir, 'x.sock'), '--port', '1']);
  assert.equal(both.status, 2);
  const halfTls = serveSync([base, '--tls-cert', 'x.pem', '--port', '0']);
  assert.equal(halfTls.status, 2);
  assert.match(halfTls.stderr, /--tls-cert and --tls-key go together/);
});

test('--writable is refused on a disk another disk depends on (exit 4), and a missing disk is an I/O error (exit 5)', () => {
  const r = serveSync([base, '--socket', join(dir, 'c.sock'), '--writable']);
  assert.equal(r.status, 4, r.stderr);
  assert.match(r.stderr, /HAS_DEPENDENTS/);
  const missing = serveSync([join(dir, 'nope.vhdx'), '--socket', join(dir, 'd.sock')]);
  assert.equal(missing.status, 5, missing.stderr);
});

test('--allow-remote with TLS listens on every address; clients still need TLS, and with --tls-client-ca a certificate from that CA', async (t) => {
  if (!requireOracle(t, 'openssl') || !requireOracle(t, 'nbdinfo')) return;
  const certs = makeCertificates(dir);
  const clientCerts = makeClientCertificate(dir);
  const tls = ['--tls-cert', join(certs, 'server-cert.pem'), '--tls-key', join(certs, 'server-key.pem')];
  const served = await serveCli([base, '--bind', '0.0.0.0', '--port', '0', '--allow-remote', ...tls]);
  try {
    assert.equal(served.info.host, '0.0.0.0');
    const port = served.info.port!;
    const ok = spawnSync('nbdinfo', ['--size', `nbds://127.0.0.1:${port}/base.vhdx?tls-certificates=${certs}`], { encoding: 'utf8' });
    assert.equal(ok.stdout.trim(), String(8 * MIB), ok.stderr);
    const plain = spawnSync('nbdinfo', ['--size', `nbd://127.0.0.1:${port}/base.vhdx`], { encoding: 'utf8' });
    assert.notEqual(plain.status, 0);
  } finally {
    assert.equal(await served.stop(), 0, served.stderr());
  }
  assert.match(served.stderr(), /warning: listening beyond loopback without --tls-client-ca/);
  const strict = await serveCli([base, '--bind', '0.0.0.0', '--port', '0', '--allow-remote', ...tls, '--tls-client-ca', join(certs, 'ca-cert.pem')]);
  try {
    const port = strict.info.port!;
    const anonymous = spawnSync('nbdinfo', ['--size', `nbds://127.0.0.1:${port}/base.vhdx?tls-certificates=${certs}`], { encoding: 'utf8' });
    assert.notEqual(anonymous.status, 0, 'a client without a certificate is refused');
    const known = spawnSync('nbdinfo', ['--size', `nbds://127.0.0.1:${port}/base.vhdx?tls-certificates=${clientCerts}`], { encoding: 'utf8' });
    assert.equal(known.stdout.trim(), String(8 * MIB), known.stderr);
  } finally {
    assert.equal(await strict.stop(), 0, strict.stderr());
  }
  assert.doesNotMatch(strict.stderr(), /warning/);
});

test('served files stay locked: QEMU cannot write a served leaf nor its parents, a second writable serve is LOCKED; the locks go with the server', async (t) => {
  const socket = join(dir, 'lock.sock');
  const served = await serveCli([leaf, '--socket', socket, '--writable']);
  try {
    const second = serveSync([leaf, '--socket', join(dir, 'lock2.sock'), '--writable']);
    assert.equal(second.status, 4, second.stderr);
    assert.match(second.stderr, /LOCKED/);
    if (requireOracle(t, 'qemu-io')) {
      for (const file of [leaf, base]) {
        const q = spawnSync('qemu-io', ['-c', 'write 0 512', file], { encoding: 'utf8' });
        assert.notEqual(q.status, 0, `qemu-io wrote into ${file} while it was served`);
        assert.match(q.stderr, /Failed to get .*lock/);
      }
    }
  } finally {
    assert.equal(await served.stop(), 0, served.stderr());
  }
  const again = await serveCli([leaf, '--socket', socket, '--writable']);
  assert.equal(await again.stop(), 0, 'the locks were released with the first server');
});
