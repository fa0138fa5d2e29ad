/**
 * The QMP and guest-agent clients against scripted servers on a unix socket (the protocol cases
 * QEMU will not produce on demand: late and out-of-order answers, silence, a dropped connection,
 * garbage). The same clients against real QEMU are in vm-guest, vm-nbd and vm-qemu-command.
 */
import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { DiskchainError } from '../src/io/errors.js';
import { GuestAgentClient } from '../src/vm/guest-agent.js';
import { QmpClient } from '../src/vm/qmp.js';
import { tempFolder } from './helpers/guest.js';

type Request = { execute: string; arguments?: Record<string, unknown>; id?: unknown };
type Handler = (request: Request, peer: { send: (m: unknown) => void; raw: (bytes: Uint8Array) => void; socket: Socket }) => void;

const GREETING = { QMP: { version: { qemu: { major: 7, minor: 2, micro: 22 }, package: 'test' }, capabilities: ['oob'] } };

/** A server that sends `greeting` (if any) on connect and hands each request line to `handler`. */
async function fakeServer(path: string, handler: Handler, greeting: unknown = GREETING): Promise<{ server: Server; requests: Request[]; close: () => Promise<void> }> {
  const requests: Request[] = [];
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    const peer = { send: (m: unknown) => socket.write(JSON.stringify(m) + '\r\n'), raw: (bytes: Uint8Array) => socket.write(bytes), socket };
    if (greeting !== undefined) peer.send(greeting);
    let buffer = '';
    socket.setEncoding('utf8');
    socket.on('error', () => {});
    socket.on('data', (chunk: string) => {
      buffer += chunk;
      let i: number;
      while ((i = buffer.indexOf('\n')) >= 0) {
        const request = JSON.parse(buffer.slice(0, i)) as Request;
        buffer = buffer.slice(i + 1);
        requests.push(request);
        handler(request, peer);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return {
    server,
    requests,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

async function rejectsWith(promise: Promise<unknown>, code: string): Promise<DiskchainError> {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof DiskchainError, `not a DiskchainError: ${String(e)}`);
    assert.equal(e.code, code, e.message);
    return e;
  }
  assert.fail(`expected ${code}`);
}

const answerCapabilities: Handler = (r, p) => {
  if (r.execute === 'qmp_capabilities') p.send({ return: {}, id: r.id });
};

test('QMP: greeting, capabilities, pipelined commands matched by id, errors', { timeout: 20_000 }, async () => {
  const { dir, remove } = await tempFolder('diskchain-qmp-');
  const held: Request[] = [];
  const fake = await fakeServer(join(dir, 'qmp.sock'), (r, p) => {
    answerCapabilities(r, p);
    if (r.execute === 'query-status') held.push(r);
    if (r.execute === 'query-version') {
      // answer the later command first, then the held one
      p.send({ return: GREETING.QMP.version, id: r.id });
      for (const h of held.splice(0)) p.send({ return: { running: true, status: 'running' }, id: h.id });
    }
    if (r.execute === 'cont') p.send({ error: { class: 'GenericError', desc: 'not now' }, id: r.id });
  });
  try {
    const qmp = await QmpClient.connect(join(dir, 'qmp.sock'));
    assert.deepEqual(qmp.version, { major: 7, minor: 2, micro: 22 });
    assert.deepEqual(qmp.greeting.capabilities, ['oob']);
    assert.equal(fake.requests[0]!.execute, 'qmp_capabilities', 'capabilities negotiated first');
    const [status, version] = await Promise.all([qmp.execute('query-status'), qmp.execute('query-version')]);
    assert.deepEqual(status, { running: true, status: 'running' });
    assert.equal(version.qemu.major, 7);
    const e = await rejectsWith(qmp.execute('cont'), 'QMP_ERROR');
    assert.equal(e.details.class, 'GenericError');
    assert.match(e.message, /cont: not now/);
    const ids = fake.requests.map((r) => r.id);
    assert.equal(new Set(ids).size, ids.length, 'every command has its own id');
    await qmp.close();
    await rejectsWith(qmp.execute('query-status'), 'QMP_CLOSED');
  } finally {
    await fake.close();
    await remove();
  }
});

test('QMP: a command times out alone; its late answer is dropped; cancel with a signal', { timeout: 20_000 }, async () => {
  const { dir, remove } = await tempFolder('diskchain-qmp-');
  let late: Request | undefined;
  const fake = await fakeServer(join(dir, 'qmp.sock'), (r, p) => {
    answerCapabilities(r, p);
    if (r.execute === 'stop') late = r; // never answered in time
    if (r.execute === 'query-status') {
      if (late) p.send({ return: {}, id: late.id }); // the stale answer arrives first
      p.send({ return: { running: false, status: 'paused' }, id: r.id });
    }
  });
  try {
    const qmp = await QmpClient.connect(join(dir, 'qmp.sock'));
    const started = Date.now();
    await rejectsWith(qmp.execute('stop', undefined, { timeoutMs: 100 }), 'TIMEOUT');
    assert.ok(Date.now() - started < 2000);
    assert.deepEqual(await qmp.execute('query-status'), { running: false, status: 'paused' });
    const controller = new AbortController();
    const pending = qmp.execute('stop', undefined, { signal: controller.signal });
    controller.abort();
    await rejectsWith(pending, 'ABORTED');
    assert.equal(qmp.isClosed, false);
    await qmp.close();
  } finally {
    await fake.close();
    await remove();
  }
});

test('QMP: events reach listeners, waitForEvent and events() in order', { timeout: 20_000 }, async () => {
  const { dir, remove } = await tempFolder('diskchain-qmp-');
  const event = (name: string, data: Record<string, unknown> = {}) => ({ event: name, data, timestamp: { seconds: 1, microseconds: 2 } });
  const fake = await fakeServer(join(dir, 'qmp.sock'), (r, p) => {
    answerCapabilities(r, p);
    if (r.execute === 'stop') {
      p.send(event('STOP'));
      p.send({ return: {}, id: r.id });
      p.send(event('BLOCK_IO_ERROR', { device: '', 'node-name': 'disk1', operation: 'write', action: 'stop', nospace: false, reason: 'EIO' }));
      p.send(event('BLOCK_IO_ERROR', { device: '', 'node-name': 'disk0', operation: 'write', action: 'stop', nospace: true, reason: 'No space left on device' }));
    }
  });
  try {
    const qmp = await QmpClient.connect(join(dir, 'qmp.sock'));
    const iterator = qmp.events();
    const seen: string[] = [];
    const stopListening = qmp.onEvent((e) => seen.push(e.event));
    const nospace = qmp.waitForEvent<{ nospace?: boolean; 'node-name'?: string }>('BLOCK_IO_ERROR', { match: (e) => e.data.nospace === true, timeoutMs: 5000 });
    const stopEvent = qmp.waitForEvent('STOP', { timeoutMs: 5000 });
    await qmp.execute('stop');
    assert.equal((await nospace).data['node-name'], 'disk0');
    assert.deepEqual((await stopEvent).timestamp, { seconds: 1, microseconds: 2 });
    const first3: string[] = [];
    for await (const e of iterator) {
      first3.push(e.event);
      if (first3.length === 3) break;
    }
    assert.deepEqual(first3, ['STOP', 'BLOCK_IO_ERROR', 'BLOCK_IO_ERROR']);
    stopListening();
    assert.deepEqual(seen, ['STOP', 'BLOCK_IO_ERROR', 'BLOCK_IO_ERROR']);
    await rejectsWith(qmp.waitForEvent('RESUME', { timeoutMs: 50 }), 'TIMEOUT');
    await qmp.close();
  } finally {
    await fake.close();
    await remove();
  }
});

test('QMP: a dropped connection fails what is pending and ends the event stream', { timeout: 20_000 }, async () => {
  const { dir, remove } = await tempFolder('diskchain-qmp-');
  const fake = await fakeServer(join(dir, 'qmp.sock'), (r, p) => {
    answerCapabilities(r, p);
    if (r.execute === 'quit') setTimeout(() => p.socket.destroy(), 20); // QEMU died without answering
  });
  try {
    const qmp = await QmpClient.connect(join(dir, 'qmp.sock'));
    const iterator = qmp.events();
    const waiting = qmp.waitForEvent('SHUTDOWN', { timeoutMs: 5000 });
    await rejectsWith(qmp.execute('quit'), 'QMP_CLOSED');
    await rejectsWith(waiting, 'QMP_CLOSED');
    assert.equal((await qmp.closed).code, 'QMP_CLOSED');
    assert.equal(qmp.isClosed, true);
    assert.deepEqual(await iterator.next(), { done: true, value: undefined });
    await rejectsWith(qmp.execute('query-status'), 'QMP_CLOSED');
  } finally {
    await fake.close();
    await remove();
  }
});

test('QMP: nothing listening, no greeting, garbage', { timeout: 20_000 }, async () => {
  const { dir, remove } = await tempFolder('diskchain-qmp-');
  const silent = await fakeServer(join(dir, 'silent.sock'), () => {}, undefined);
  const garbage = await fakeServer(join(dir, 'garbage.sock'), () => {}, undefined);
  garbage.server.on('connection', (s) => s.write('this is not JSON\n'));
  const wrong = await fakeServer(join(dir, 'wrong.sock'), () => {}, { hello: 'world' });
  try {
    await rejectsWith(QmpClient.connect(join(dir, 'absent.sock')), 'QMP_CLOSED');
    await rejectsWith(QmpClient.connect(join(dir, 'silent.sock'), { timeoutMs: 100 }), 'TIMEOUT');
    const e = await rejectsWith(QmpClient.connect(join(dir, 'garbage.sock')), 'QMP_CLOSED');
    assert.match(e.message, /not JSON/);
    await rejectsWith(QmpClient.connect(join(dir, 'wrong.sock')), 'QMP_ERROR');
  } finally {
    for (const f of [silent, garbage, wrong]) await f.close();
    await remove();
  }
});

test('guest agent: guest-sync-delimited skips stale answers; a timed-out command resynchronises the next one', { timeout: 20_000 }, async () => {
  const { dir, remove } = await tempFolder('diskchain-qga-');
  let frozen = false;
  let ignoreNextPing = false;
  const fake = await fakeServer(
    join(dir, 'qga.sock'),
    (r, p) => {
      switch (r.execute) {
        case 'guest-sync-delimited':
          p.send({ return: 12345, id: 999 }); // a stale answer meant for an earlier client
          p.raw(Uint8Array.of(0xff));
          p.send({ return: r.arguments!.id, id: r.id });
          break;
        case 'guest-ping':
          if (ignoreNextPing) ignoreNextPing = false;
          else p.send({ return: {}, id: r.id });
          break;
        case 'guest-fsfreeze-freeze':
          frozen = true;
          p.send({ return: 2, id: r.id });
          break;
        case 'guest-fsfreeze-thaw':
          frozen = false;
          p.send({ return: 2, id: r.id });
          break;
        case 'guest-fsfreeze-status':
          p.send({ return: frozen ? 'frozen' : 'thawed', id: r.id });
          break;
        default:
          p.send({ error: { class: 'CommandNotFound', desc: `no ${r.execute}` }, id: r.id });
      }
    },
    undefined,
  );
  const mute = await fakeServer(join(dir, 'mute.sock'), () => {}, undefined);
  try {
    const agent = await GuestAgentClient.connect(join(dir, 'qga.sock'));
    await agent.ping();
    assert.equal(await agent.fsfreezeFreeze(), 2);
    assert.equal(await agent.fsfreezeStatus(), 'frozen');
    assert.equal(await agent.fsfreezeThaw(), 2);
    await rejectsWith(agent.execute('guest-shutdown'), 'QMP_ERROR');
    ignoreNextPing = true;
    await rejectsWith(agent.ping({ timeoutMs: 100 }), 'TIMEOUT');
    const before = fake.requests.length;
    await agent.ping();
    assert.deepEqual(fake.requests.slice(before).map((r) => r.execute), ['guest-sync-delimited', 'guest-ping']);
    await agent.close();
    // an agent that never answers (the guest runs none): TIMEOUT, after retrying the sync
    const started = Date.now();
    await rejectsWith(GuestAgentClient.connect(join(dir, 'mute.sock'), { timeoutMs: 1500 }), 'TIMEOUT');
    assert.ok(Date.now() - started >= 1400);
    assert.ok(mute.requests.filter((r) => r.execute === 'guest-sync-delimited').length >= 2, 'the sync was retried');
  } finally {
    await fake.close();
    await mute.close();
    await remove();
  }
});
