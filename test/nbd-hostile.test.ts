/**
 * Hostile clients: fast-check generates byte streams from a grammar of the protocol's pieces, each
 * valid or subtly wrong (bad magics, unknown client flags and options, lengths that disagree with the
 * data, huge lengths, reads past the end, unknown commands and flags, payloads cut short, garbage),
 * and sends them with or without reading the replies, ending with a half-close, a reset or nothing.
 * Meanwhile a well-behaved client keeps reading and checking the disk. The server must never crash,
 * never hold more than its per-connection bounds, keep the well-behaved client's reads correct, and
 * still accept new clients afterwards; a server close must not wait on a client that stopped reading.
 */
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { openChain } from '../src/chain/open-chain.js';
import { buildChain } from './helpers/merge-chain.js';
import { CMD, NbdClient } from './helpers/nbd-client.js';
import { serveChain, type Served } from './helpers/nbd-serve.js';
import { assertBytesEqual, MIB, tempDir } from './helpers/vhdx-util.js';

const SIZE = 8 * MIB;
const LIMITS = { maxPayload: MIB, maxBytesInFlight: 2 * MIB, maxRequestsInFlight: 16, readAhead: 64 * 1024, handshakeTimeoutMs: 1000 };
let dir: string;
let cleanup: () => void;
let leaf: string;
let content: Uint8Array;
before(async () => {
  ({ dir, cleanup } = tempDir('diskchain-nbd-hostile-'));
  leaf = (await buildChain(join(dir, 'chain'), 'vhdx', 51, SIZE))[3]!;
  const chain = await openChain(leaf);
  content = new Uint8Array(SIZE);
  await chain.read(content, 0);
  await chain.close();
});
after(() => cleanup?.());

const u16 = (n: number): Buffer => Buffer.from([n >>> 8, n & 255]);
const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
};
const u64 = (n: bigint): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt.asUintN(64, n));
  return b;
};
const IHAVEOPT = 0x49484156454f5054n;

/** A length: often right, sometimes off by a little, sometimes enormous. */
const lengthLie = fc.oneof(fc.constant(0), fc.integer({ min: -8, max: 8 }), fc.constantFrom(0x7fffffff, 0xffffffff, 2 ** 20 + 1, 2 ** 25));

const clientFlags = fc.oneof(fc.constant(3), fc.constant(1), fc.constant(0), fc.integer({ min: 0, max: 0xffffffff }));

const optionPiece = fc
  .record({
    badMagic: fc.integer({ min: 0, max: 9 }).map((n) => n === 0),
    option: fc.oneof(fc.integer({ min: 0, max: 12 }), fc.integer({ min: 0, max: 0xffffffff })),
    data: fc.uint8Array({ maxLength: 96 }),
    lie: lengthLie,
    wellFormedName: fc.boolean(),
  })
  .map((o) => {
    let data = Buffer.from(o.data);
    if (o.wellFormedName && (o.option === 6 || o.option === 7)) data = Buffer.concat([u32(0), u16(1), u16(3)]); // GO/INFO for ""
    const declared = o.lie > 8 ? o.lie : Math.max(0, data.length + o.lie);
    return Buffer.concat([o.badMagic ? u64(0x1234n) : u64(IHAVEOPT), u32(o.option), u32(declared), data]);
  });

const GO_DEFAULT = Buffer.concat([u64(IHAVEOPT), u32(8), u32(0), u64(IHAVEOPT), u32(7), u32(8), u32(0), u16(1), u16(3)]);

const requestPiece = fc
  .record({
    badMagic: fc.integer({ min: 0, max: 19 }).map((n) => n === 0),
    flags: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 0xffff })),
    type: fc.oneof(fc.integer({ min: 0, max: 7 }), fc.integer({ min: 0, max: 0xffff })),
    offset: fc.oneof(fc.integer({ min: 0, max: SIZE }).map(BigInt), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n })),
    length: fc.oneof(fc.integer({ min: 0, max: 2 * MIB }), fc.integer({ min: 0, max: 0xffffffff })),
    payload: fc.integer({ min: 0, max: 4096 }),
  })
  .map((r) => {
    const type = r.type === CMD.DISC ? CMD.READ : r.type; // a DISC would end the stream early; one may come last
    const header = Buffer.concat([u32(r.badMagic ? 0x25609514 : 0x25609513), u16(r.flags), u16(type), u64(7n), u64(r.offset), u32(r.length)]);
    return type === CMD.WRITE ? Buffer.concat([header, Buffer.alloc(Math.min(r.payload, r.length), 0xee)]) : header;
  });

const stream = fc.record({
  flags: clientFlags,
  options: fc.array(optionPiece, { maxLength: 6 }),
  enter: fc.boolean(),
  requests: fc.array(requestPiece, { maxLength: 24 }),
  garbage: fc.uint8Array({ maxLength: 64 }),
  readsReplies: fc.boolean(),
  ending: fc.constantFrom('half-close', 'reset', 'linger', 'disc'),
});

type Stream = typeof stream extends fc.Arbitrary<infer T> ? T : never;

async function hostileSession(served: Served, s: Stream): Promise<void> {
  const sock: Socket = connect({ path: served.socket });
  sock.on('error', () => undefined);
  await new Promise<void>((r) => sock.once('connect', () => r()));
  if (!s.readsReplies) sock.pause();
  else sock.on('data', () => undefined);
  const parts = [u32(s.flags), ...s.options, ...(s.enter ? [GO_DEFAULT] : []), ...s.requests, Buffer.from(s.garbage)];
  if (s.ending === 'disc') parts.push(Buffer.concat([u32(0x25609513), u16(0), u16(CMD.DISC), u64(0n), u64(0n), u32(0)]));
  for (const p of parts) if (!sock.destroyed) sock.write(p);
  if (s.ending === 'half-close' || s.ending === 'disc') sock.end();
  await new Promise((r) => setTimeout(r, 20));
  if (s.ending === 'reset') sock.destroy(); // a unix socket has no RST: the closest is an abrupt close
  else if (s.ending === 'linger') setTimeout(() => sock.destroy(), 300);
  else setTimeout(() => sock.destroy(), 100);
}

test('generated hostile request streams never crash the server nor disturb a well-behaved client', async () => {
  const served = await serveChain(dir, leaf, { limits: LIMITS });
  const good = await NbdClient.connect(served.socket);
  let goodReads = 0;
  let stop = false;
  const checker = (async () => {
    let seed = 1;
    while (!stop) {
      seed = (seed * 1103515245 + 12345) >>> 0;
      const length = 1 + (seed % MIB);
      const offset = (seed >>> 3) % (SIZE - length);
      assertBytesEqual(await good.read(offset, length), content.subarray(offset, offset + length), `good read ${offset}+${length}`);
      goodReads++;
    }
  })();
  let maxHeld = 0;
  let failed = true;
  try {
    await fc.assert(
      fc.asyncProperty(stream, async (s) => {
        await hostileSession(served, s);
        for (const c of served.server.connectionStats()) maxHeld = Math.max(maxHeld, c.bytesHeld + c.unread);
      }),
      { numRuns: 150 },
    );
    await new Promise((r) => setTimeout(r, 400));
    failed = false;
  } finally {
    stop = true;
    await checker;
    if (failed) await served.close();
  }
  assert.ok(goodReads > 20, `the good client kept reading (${goodReads} reads)`);
  assert.ok(maxHeld <= LIMITS.maxBytesInFlight + LIMITS.readAhead + 64 * 1024, `a connection held ${maxHeld} bytes`);
  const late = await NbdClient.connect(served.socket);
  assertBytesEqual(await late.read(0, 4096), content.subarray(0, 4096), 'a new client after the storm');
  await late.disconnect();
  await good.disconnect();
  // A client that stopped reading with replies queued does not hold the server's close for long.
  const stalled = await NbdClient.connect(served.socket);
  stalled.socket.pause();
  for (let i = 0; i < 64; i++) void stalled.request(CMD.READ, 0, MIB);
  await new Promise((r) => setTimeout(r, 200));
  const t0 = Date.now();
  await served.server.close(500);
  assert.ok(Date.now() - t0 < 3000, `close took ${Date.now() - t0} ms`);
  await served.exp.close();
  stalled.socket.destroy();
});

test('a request storm from many connections at once is served or refused, and the server stays up', async () => {
  const served = await serveChain(dir, leaf, { limits: LIMITS });
  try {
    const clients = await Promise.all(Array.from({ length: 12 }, () => NbdClient.connect(served.socket)));
    const replies = await Promise.all(clients.flatMap((c, k) => Array.from({ length: 200 }, (_, i) => c.request(CMD.READ, ((k * 200 + i) * 4096) % (SIZE - 4096), 4096))));
    assert.ok(replies.every((r) => r.error === 0));
    for (const [i, r] of replies.entries()) {
      const offset = (i * 4096) % (SIZE - 4096);
      assertBytesEqual(r.data!, content.subarray(offset, offset + 4096), `storm read ${i}`);
    }
    await Promise.all(clients.map((c) => c.disconnect()));
  } finally {
    await served.close();
  }
});
