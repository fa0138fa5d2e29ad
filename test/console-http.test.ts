// The console's HTTP surface without a browser: the token and cross-site rules, confinement to the
// roots, JSON errors for bad input, and the recovery plan run step by step as jobs (progress over
// server-sent events, cancel, resume), checked on disk with the engine and qemu-img.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, renameSync, rmSync, symlinkSync, writeFileSync, mkdtempSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { startConsole, type RunningConsole } from '../src/console/start.js';
import { allowedHosts, isLoopback } from '../src/console/security.js';
import { convert } from '../src/api/convert.js';
import { DiskchainError } from '../src/io/errors.js';
import { createChild, createDisk } from '../src/api/create.js';
import { buildChain, chainHash } from './helpers/merge-chain.js';
import { client, readEvents, request, type Reply } from './helpers/console-client.js';
import { qemuImg, requireOracle } from './helpers/oracles.js';
import { MIB, randomBytesFrom } from './helpers/vhdx-util.js';
import { CLI } from './helpers/cli.js';

let work: string;
let root: string;
let server: RunningConsole;
let port: number;
let api: ReturnType<typeof client>;

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'diskchain-console-http-'));
  root = join(work, 'root');
  mkdirSync(join(root, 'disks'), { recursive: true });
  mkdirSync(join(work, 'outside'));
  writeFileSync(join(work, 'outside', 'secret.vhdx'), 'not yours');
  server = await startConsole({ roots: [root] });
  port = server.port;
  api = client(port, server.token);
});

after(async () => {
  await server.close();
  rmSync(work, { recursive: true, force: true });
});

function assertError(r: Reply, status: number, code: string): void {
  assert.equal(r.status, status, r.text);
  assert.match(String(r.headers['content-type']), /application\/json/);
  const body = r.json();
  assert.equal(body.error.code, code, r.text);
  assert.ok(body.error.message.length > 0);
  assert.doesNotMatch(r.text, /\n\s+at |node:internal|\.js:\d+/, 'no stack trace');
}

async function waitJob(id: string): Promise<any> {
  for (let i = 0; i < 600; i++) {
    const { job } = (await api.get(`/api/jobs/${id}`)).json();
    if (job.state !== 'running') return job;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`job ${id} did not finish`);
}

test('the printed URL carries a fresh token; the page trades it for a SameSite=Strict cookie', async () => {
  assert.match(server.url, new RegExp(`^http://127\\.0\\.0\\.1:${port}/\\?token=[A-Za-z0-9_-]{43}$`));
  const other = await startConsole({ roots: [root] });
  try {
    assert.notEqual(other.token, server.token, 'a new token per start');
  } finally {
    await other.close();
  }
  const first = await request(port, 'GET', `/?token=${server.token}`);
  assert.equal(first.status, 303);
  assert.equal(first.headers.location, '/', 'the token leaves the address bar');
  const cookie = String(first.headers['set-cookie']);
  assert.match(cookie, new RegExp(`diskchain-token-${port}=${server.token}`));
  assert.match(cookie, /HttpOnly/);
  assert.match(cookie, /SameSite=Strict/);
  const page = await request(port, 'GET', '/', { headers: { cookie: `diskchain-token-${port}=${server.token}` } });
  assert.equal(page.status, 200);
  assert.match(page.text, new RegExp(`<meta name="diskchain-token" content="${server.token}">`));
  assert.match(String(page.headers['content-security-policy']), /script-src 'self'/);
  assert.match((await request(port, 'GET', '/assets/app.js', { headers: { cookie: `diskchain-token-${port}=${server.token}` } })).headers['content-type'] as string, /javascript/);
});

test('requests without the token, from another site, or under a rebound host name are refused', async () => {
  const cookie = `diskchain-token-${port}=${server.token}`;
  assertError(await request(port, 'GET', '/api/session'), 403, 'FORBIDDEN');
  assertError(await request(port, 'GET', '/api/session', { headers: { cookie: `diskchain-token-${port}=${'x'.repeat(43)}` } }), 403, 'FORBIDDEN');
  assertError(await request(port, 'GET', '/assets/app.js'), 403, 'FORBIDDEN');
  assertError(await request(port, 'GET', '/api/events'), 403, 'FORBIDDEN');
  const page = await request(port, 'GET', '/');
  assert.equal(page.status, 403);
  assert.match(page.text, /FORBIDDEN/);
  assert.equal((await request(port, 'GET', '/api/session', { headers: { cookie } })).status, 200);
  assert.equal((await request(port, 'GET', '/api/session', { headers: { cookie, host: `localhost:${port}` } })).status, 200);
  // DNS rebinding: the attacker's name resolves to 127.0.0.1, the browser sends that name.
  assertError(await request(port, 'GET', '/api/session', { headers: { cookie, host: `evil.example:${port}` } }), 403, 'FORBIDDEN');
  const rebound = await request(port, 'GET', `/?token=${server.token}`, { headers: { host: `evil.example:${port}` } });
  assert.equal(rebound.status, 403);
  assert.match(rebound.text, /FORBIDDEN: the Host header/);
  assert.equal(rebound.headers['set-cookie'], undefined);
  // A change needs the header: the cookie alone (what a cross-site form sends) is not enough.
  const body = { path: 'disks' };
  assertError(await request(port, 'POST', '/api/recovery/scan', { headers: { cookie }, body }), 403, 'FORBIDDEN');
  const withHeader = { cookie, 'x-diskchain-token': server.token };
  assertError(await request(port, 'POST', '/api/recovery/scan', { headers: { ...withHeader, origin: 'http://evil.example' }, body }), 403, 'FORBIDDEN');
  assertError(await request(port, 'POST', '/api/recovery/scan', { headers: { ...withHeader, 'sec-fetch-site': 'cross-site' }, body }), 403, 'FORBIDDEN');
  assertError(await request(port, 'POST', `/api/recovery/scan?token=${server.token}`, { headers: { cookie }, body }), 403, 'FORBIDDEN');
  assert.equal((await api.get('/api/jobs')).json().jobs.length, 0, 'no refused request started a job');
  const ok = await request(port, 'POST', '/api/recovery/scan', { headers: { ...withHeader, origin: `http://127.0.0.1:${port}`, 'sec-fetch-site': 'same-origin' }, body });
  assert.equal(ok.status, 200, ok.text);
  await waitJob(ok.json().job.id);
});

test('the Host names a console answers to: loopback names, plus the bound address when it is not loopback', () => {
  const local = allowedHosts('127.0.0.1', 8123);
  assert.deepEqual([...local].sort(), ['127.0.0.1:8123', '[::1]:8123', 'localhost:8123']);
  const remote = allowedHosts('192.0.2.7', 8123);
  assert.ok(remote.has('192.0.2.7:8123') && remote.has('localhost:8123'));
  assert.ok(!remote.has('192.0.2.7') && !remote.has('evil.example:8123'));
  assert.ok(allowedHosts('2001:db8::1', 80).has('[2001:db8::1]'), 'port 80 is left out of Host by browsers');
  for (const a of ['127.0.0.1', '127.8.9.10', '::1', '[::1]', 'localhost', '::ffff:127.0.0.1']) assert.ok(isLoopback(a), a);
  for (const a of ['0.0.0.0', '::', '192.0.2.7', '::ffff:192.0.2.7', '128.0.0.1']) assert.ok(!isLoopback(a), a);
});

test('paths never leave the roots, through .., absolute paths or symlinks', async () => {
  symlinkSync(join(work, 'outside'), join(root, 'escape'));
  try {
    for (const path of [join(work, 'outside'), '../outside', 'disks/../../outside', 'escape', 'escape/secret.vhdx', '/etc', join(work, 'outside', 'missing')]) {
      assertError(await api.get(`/api/browse?path=${encodeURIComponent(path)}`), 403, 'PATH_NOT_ALLOWED');
      assertError(await api.get(`/api/measure?path=${encodeURIComponent(path)}`), 403, 'PATH_NOT_ALLOWED');
      assertError(await api.post('/api/recovery/scan', { path }), 403, 'PATH_NOT_ALLOWED');
    }
    assertError(await api.get(`/api/space?path=${encodeURIComponent('/')}`), 403, 'PATH_NOT_ALLOWED');
    assertError(await api.get(`/api/browse?path=${encodeURIComponent('disks/missing')}`), 404, 'NOT_FOUND');
    const listing = (await api.get('/api/browse')).json();
    assert.equal(listing.path, root);
    assert.equal(listing.parent, null, 'no way up from a root');
  } finally {
    rmSync(join(root, 'escape'));
  }
});

test('bad input gets a JSON error with the engine code, never a stack', async () => {
  const auth = { 'x-diskchain-token': server.token, cookie: `diskchain-token-${port}=${server.token}` };
  assertError(await request(port, 'POST', '/api/recovery/scan', { headers: auth, body: '{"path":' }), 400, 'INVALID_ARGUMENT');
  assertError(await request(port, 'POST', '/api/recovery/scan', { headers: auth, body: { path: 7 } }), 400, 'INVALID_ARGUMENT');
  assertError(await request(port, 'POST', '/api/recovery/scan', { headers: auth, body: { path: 'disks', more: 1 } }), 400, 'INVALID_ARGUMENT');
  assertError(await request(port, 'POST', '/api/recovery/scan', { headers: auth, body: { path: 'a\u0000b' } }), 400, 'INVALID_ARGUMENT');
  assertError(await request(port, 'POST', '/api/recovery/scan', { headers: auth, body: JSON.stringify({ path: 'x'.repeat(100_000) }) }), 400, 'INVALID_ARGUMENT');
  assertError(await request(port, 'POST', '/api/recovery/step', { headers: auth, body: { scan: 'nope', tree: 0, step: 0 } }), 404, 'NOT_FOUND');
  assertError(await request(port, 'POST', '/api/recovery/step', { headers: auth, body: { scan: 'nope', tree: -1, step: 'x' } }), 400, 'INVALID_ARGUMENT');
  assertError(await api.get('/api/jobs/not-a-job'), 404, 'NOT_FOUND');
  assertError(await api.get('/api/nothing-here'), 404, 'NOT_FOUND');
  writeFileSync(join(root, 'disks', 'junk.vhdx'), 'vhdxfile but not really');
  try {
    const r = await api.get(`/api/measure?path=${encodeURIComponent('disks/junk.vhdx')}`);
    assertError(r, 422, r.json().error.code);
    assert.match(r.json().error.code, /^(UNKNOWN_FORMAT|CORRUPT|TRUNCATED)$/);
  } finally {
    rmSync(join(root, 'disks', 'junk.vhdx'));
  }
});

test('the command refuses a non-loopback bind without --allow-remote, and bad options, before listening', () => {
  const cases: Array<[string[], RegExp]> = [
    [['--bind', '0.0.0.0'], /INVALID_ARGUMENT: --bind 0\.0\.0\.0 would expose the console beyond this machine; add --allow-remote/],
    [['--bind', 'example.com', '--allow-remote'], /--bind takes an IP address/],
    [['--port', 'eighty'], /--port must be a whole number/],
    [['--root', join(work, 'missing')], /root .*missing does not exist/],
  ];
  for (const [args, message] of cases) {
    const r = spawnSync(process.execPath, [CLI, 'console', '--root', root, ...args], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, message);
    assert.doesNotMatch(r.stderr, /\n\s+at /);
    assert.equal(r.stdout, '', 'no URL printed');
  }
});

test('recovery: scan, then the plan step by step as jobs (re-point, merges); the result reads as the chain did', async (t) => {
  if (!requireOracle(t, 'qemu-img')) return;
  const dir = join(root, 'disks', 'lost-host');
  // base <- c1 <- c2 <- c3, and c1 renamed: c2 no longer finds it by its stored path.
  const [base, c1, c2, c3] = await buildChain(dir, 'vhdx', 11);
  const expected = await chainHash(c3!);
  const flat = join(work, 'expected.raw');
  await convert(c3!, flat, { format: 'raw' });
  renameSync(c1!, join(dir, 'renamed-c1.avhdx'));

  const started = (await api.post('/api/recovery/scan', { path: 'disks/lost-host' })).json().job;
  assert.equal(started.kind, 'scan');
  const scanned = await waitJob(started.id);
  assert.equal(scanned.state, 'done', JSON.stringify(scanned.error));
  const state = (await api.get(`/api/recovery/${scanned.id}`)).json();
  assert.equal(state.report.summary.staleLinks, 1);
  const plan = state.report.plan[0];
  assert.equal(plan.action, 'merge');
  assert.deepEqual(plan.steps.map((s: { args: string[] }) => s.args[0]), ['reparent', 'merge', 'merge', 'merge']);
  assert.deepEqual(state.next, [0]);

  assertError(await api.post('/api/recovery/step', { scan: scanned.id, tree: 0, step: 1 }), 400, 'INVALID_ARGUMENT');
  assertError(await api.post('/api/recovery/step', { scan: scanned.id, tree: 3, step: 0 }), 400, 'INVALID_ARGUMENT');
  for (let step = 0; step < plan.steps.length; step++) {
    const job = await waitJob((await api.post('/api/recovery/step', { scan: scanned.id, tree: 0, step })).json().job.id);
    assert.equal(job.state, 'done', JSON.stringify(job.error));
    assert.equal(job.kind, step === 0 ? 'reparent' : 'merge');
    assertError(await api.post('/api/recovery/step', { scan: scanned.id, tree: 0, step }), 400, 'INVALID_ARGUMENT');
  }
  assert.deepEqual((await api.get(`/api/recovery/${scanned.id}`)).json().next, [plan.steps.length]);
  for (const p of [c2, c3, join(dir, 'renamed-c1.avhdx')]) assert.equal(existsSync(p!), false, `${p} merged away`);
  assert.equal(await chainHash(base!), expected);
  assert.match(qemuImg(['compare', '-f', 'vhdx', '-F', 'raw', base!, flat]), /Images are identical/);
});

test('a merge step streams its progress, is cancelled through its AbortSignal, and resumes when run again', async (t) => {
  if (!requireOracle(t, 'qemu-img')) return;
  const dir = join(root, 'disks', 'big');
  mkdirSync(dir);
  const base = join(dir, 'base.vhdx');
  await (await createDisk(base, 'vhdx', { diskType: 'dynamic', virtualSize: 192 * MIB })).close();
  const child = await createChild(join(dir, 'big.avhdx'), base, {});
  for (let off = 0; off < 160 * MIB; off += 8 * MIB) await child.write(randomBytesFrom(off, 8 * MIB), off);
  await child.close();
  const expected = await chainHash(join(dir, 'big.avhdx'));
  const scan = await waitJob((await api.post('/api/recovery/scan', { path: dir })).json().job.id);

  let cancelled = false;
  const events = readEvents(port, server.token, (e) => e.event === 'job' && e.data.kind === 'merge' && e.data.state !== 'running', 60_000, (e) => {
    if (!cancelled && e.event === 'job' && e.data.kind === 'merge' && e.data.progress && e.data.progress.done < e.data.progress.total) {
      cancelled = true;
      void api.post(`/api/jobs/${e.data.id}/cancel`);
    }
  });
  await new Promise((r) => setTimeout(r, 100)); // the stream is attached
  const merging = (await api.post('/api/recovery/step', { scan: scan.id, tree: 0, step: 0 })).json().job;
  assertError(await api.post('/api/recovery/step', { scan: scan.id, tree: 0, step: 0 }), 409, 'LOCKED');
  const seen = await events;
  const last = seen[seen.length - 1]!.data;
  assert.equal(last.id, merging.id);
  assert.equal(last.state, 'cancelled', JSON.stringify(last));
  assert.equal(last.error.code, 'ABORTED');
  assert.ok(seen.some((e) => e.event === 'job' && e.data.id === merging.id && e.data.progress?.done > 0), 'progress was streamed');
  assert.equal(await chainHash(join(dir, 'big.avhdx')), expected, 'a cancelled merge changed what the chain reads');
  assert.deepEqual((await api.get(`/api/recovery/${scan.id}`)).json().next, [0], 'the cancelled step is still the next one');

  const resumed = await waitJob((await api.post('/api/recovery/step', { scan: scan.id, tree: 0, step: 0 })).json().job.id);
  assert.equal(resumed.state, 'done', JSON.stringify(resumed.error));
  assert.equal(resumed.result.resumed, true, 'the merge resumed from its journal');
  assert.equal(existsSync(join(dir, 'big.avhdx')), false);
  assert.equal(await chainHash(base), expected);
});

test('two jobs on the same files never run at once', async () => {
  const dir = join(root, 'disks', 'pair');
  mkdirSync(dir);
  await (await createDisk(join(dir, 'base.vhdx'), 'vhdx', { diskType: 'dynamic', virtualSize: 64 * MIB })).close();
  const child = await createChild(join(dir, 'child.avhdx'), join(dir, 'base.vhdx'), {});
  await child.write(randomBytesFrom(3, 32 * MIB), 0);
  await child.close();
  const hold = server.jobs.start({ kind: 'test', title: 'hold the folder', locks: [dir], run: ({ signal }) => new Promise((_, reject) => signal.addEventListener('abort', () => reject(new DiskchainError('ABORTED', 'stopped')))) });
  try {
    const scan = await waitJob((await api.post('/api/recovery/scan', { path: dir })).json().job.id);
    assert.equal(scan.state, 'done', 'a scan takes no lock');
    const r = await api.post('/api/recovery/step', { scan: scan.id, tree: 0, step: 0 });
    assertError(r, 409, 'LOCKED');
    assert.match(r.json().error.message, /hold the folder/);
  } finally {
    server.jobs.cancel(hold.id);
    await server.jobs.settled(hold.id);
  }
  assert.equal((await api.get(`/api/jobs/${hold.id}`)).json().job.state, 'cancelled');
});
