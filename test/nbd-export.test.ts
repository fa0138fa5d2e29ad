/**
 * The export and connection machinery the running-VM worker stands on: swapping the disk behind a live
 * export (drain, flush, swap, resume), FUA and FLUSH reaching the disk before their replies, a full file
 * system answered as NBD_ENOSPC and the same write succeeding once there is room, and the memory a
 * client that stops reading can make one connection hold.
 */
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createChild } from '../src/api/create.js';
import { openChain } from '../src/chain/open-chain.js';
import { ChainBackend, type ExportBackend } from '../src/server/backend.js';
import { fullDiskAfter } from './helpers/full-disk.js';
import { buildChain, restore } from './helpers/merge-chain.js';
import { CMD, FLAG, NbdClient } from './helpers/nbd-client.js';
import { serveChain } from './helpers/nbd-serve.js';
import { assertBytesEqual, MIB, randomBytesFrom, tempDir } from './helpers/vhdx-util.js';

const SIZE = 16 * MIB;
let dir: string;
let cleanup: () => void;
let pristine: string[];
before(async () => {
  ({ dir, cleanup } = tempDir('diskchain-nbd-export-'));
  pristine = await buildChain(join(dir, 'pristine'), 'vhdx', 41, SIZE);
});
after(() => cleanup?.());

/** A backend whose calls wait on `gate` and are recorded, to hold requests in flight on purpose. */
class HeldBackend implements ExportBackend {
  gate: Promise<void> = Promise.resolve();
  events: string[] = [];
  constructor(private readonly inner: ExportBackend, private readonly label: string) {}
  get size(): number {
    return this.inner.size;
  }
  get readOnly(): boolean {
    return this.inner.readOnly;
  }
  get preferredBlockSize(): number {
    return this.inner.preferredBlockSize;
  }
  private async held<T>(what: string, fn: () => Promise<T>): Promise<T> {
    this.events.push(`${this.label} start ${what}`);
    await this.gate;
    const r = await fn();
    this.events.push(`${this.label} end ${what}`);
    return r;
  }
  read(t: Uint8Array, o: number): Promise<void> {
    return this.held('read', () => this.inner.read(t, o));
  }
  write(d: Uint8Array, o: number): Promise<void> {
    return this.held('write', () => this.inner.write(d, o));
  }
  writeZeroes(o: number, l: number, m: boolean): Promise<void> {
    return this.held('zeroes', () => this.inner.writeZeroes(o, l, m));
  }
  trim(o: number, l: number): Promise<void> {
    return this.held('trim', () => this.inner.trim(o, l));
  }
  flush(): Promise<void> {
    return this.held('flush', () => this.inner.flush());
  }
  allocation(o: number, l: number, m: number) {
    return this.inner.allocation(o, l, m);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

test('swap: in-flight requests finish on the old disk, the old disk is flushed, requests that arrive meanwhile run on the new one', async () => {
  const a = restore(pristine, join(dir, 'swap-a'))[3]!;
  const bPaths = restore(pristine, join(dir, 'swap-b'));
  // b differs from a: its leaf gets its own bytes at 1 MiB.
  const bChain = await openChain(bPaths[3]!, { writable: true });
  await bChain.write(randomBytesFrom(99, MIB), MIB);
  let oldBackend!: HeldBackend;
  const served = await serveChain(dir, a, { writable: true, wrapBackend: (inner) => (oldBackend = new HeldBackend(inner, 'old')) });
  const newBackend = new HeldBackend(new ChainBackend(bChain), 'new');
  try {
    const c = await NbdClient.connect(served.socket);
    let release!: () => void;
    oldBackend.gate = new Promise<void>((r) => (release = r));
    const written = randomBytesFrom(5, 4096);
    const inFlight = [c.read(MIB, 4096), c.write(3 * MIB, written)];
    while (oldBackend.events.length < 2) await new Promise((r) => setTimeout(r, 5));
    let swapped = false;
    const swap = served.exp.swap(newBackend).then((previous) => ((swapped = true), previous));
    const during = c.read(MIB, 4096); // arrives while the export drains: must be served by the new disk
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(swapped, false, 'the swap waits for the requests in flight');
    assert.ok(!oldBackend.events.some((e) => e.startsWith('old end')), 'nothing finished before the release');
    release();
    const [readBefore] = await Promise.all(inFlight);
    const previous = await swap;
    assert.equal(previous, oldBackend);
    assert.deepEqual(oldBackend.events.slice(-1), ['old end flush'], 'the old disk was flushed last, after its requests');
    const expectedOld = new Uint8Array(4096);
    const expectedNew = new Uint8Array(4096);
    const aChain = await openChain(a);
    await aChain.read(expectedOld, MIB);
    await aChain.close();
    await bChain.read(expectedNew, MIB);
    assertBytesEqual(readBefore as Buffer, expectedOld, 'the read in flight came from the old disk');
    assertBytesEqual(await during, expectedNew, 'the read that waited came from the new disk');
    assert.notDeepEqual(expectedOld, expectedNew);
    await c.write(3 * MIB, randomBytesFrom(6, 4096));
    assert.ok(newBackend.events.includes('new end write'), 'writes now reach the new disk');
    await c.disconnect();
    await previous.close();
    const check = await openChain(a);
    const got = new Uint8Array(4096);
    await check.read(got, 3 * MIB);
    await check.close();
    assertBytesEqual(got, written, 'the write in flight landed in the old disk, and only that one');
  } finally {
    await served.close();
  }
});

test('FUA and FLUSH: the disk is flushed before the reply', async () => {
  const leaf = restore(pristine, join(dir, 'fua'))[3]!;
  let backend!: HeldBackend;
  const served = await serveChain(dir, leaf, { writable: true, wrapBackend: (inner) => (backend = new HeldBackend(inner, 'disk')) });
  try {
    const c = await NbdClient.connect(served.socket);
    await c.write(0, randomBytesFrom(1, 8192), FLAG.FUA);
    assert.deepEqual(backend.events.slice(-2), ['disk start flush', 'disk end flush'], 'FUA write: flushed before its reply');
    await c.write(8192, randomBytesFrom(2, 512));
    assert.equal(backend.events[backend.events.length - 1], 'disk end write', 'a plain write is not flushed');
    assert.equal((await c.request(CMD.FLUSH, 0, 0)).error, 0);
    assert.equal(backend.events[backend.events.length - 1], 'disk end flush');
    assert.equal((await c.request(CMD.WRITE_ZEROES, 0, 4096, { flags: FLAG.FUA })).error, 0);
    assert.equal(backend.events[backend.events.length - 1], 'disk end flush', 'FUA write-zeroes: flushed too');
    await c.disconnect();
  } finally {
    await served.close();
  }
});

test('a full file system is NBD_ENOSPC (QEMU pauses the VM); once there is room the same write succeeds and the disk is whole', async () => {
  const parent = restore(pristine, join(dir, 'enospc'))[3]!;
  const leaf = join(dir, 'enospc', 'now.avhdx');
  await (await createChild(leaf, parent)).close(); // an empty leaf: every write allocates
  const room = { bytes: 0 };
  const served = await serveChain(dir, leaf, { writable: true, wrapSource: fullDiskAfter(room) });
  const data = randomBytesFrom(8, 2 * MIB);
  const at = 12 * MIB;
  try {
    const c = await NbdClient.connect(served.socket);
    const before = await c.read(at, data.length);
    const r = await c.request(CMD.WRITE, at, data.length, { data });
    assert.equal(r.error, 28, 'NBD_ENOSPC');
    assertBytesEqual(await c.read(at, data.length), before, 'nothing changed');
    room.bytes = 64 * MIB; // the admin frees space; QEMU resumes and retries
    await c.write(at, data, FLAG.FUA);
    assertBytesEqual(await c.read(at, data.length), data, 'the retried write is there');
    await c.disconnect();
  } finally {
    await served.close();
  }
  const chain = await openChain(leaf);
  const got = new Uint8Array(data.length);
  await chain.read(got, at);
  await chain.close();
  assertBytesEqual(got, data, 'and in the file after the server closed');
});

test('a client that stops reading its replies holds at most its budget; another client reads on meanwhile', async () => {
  const leaf = pristine[3]!;
  const maxBytesInFlight = 8 * MIB;
  const served = await serveChain(dir, leaf, { limits: { maxBytesInFlight, maxPayload: 4 * MIB } });
  try {
    const stalled = await NbdClient.connect(served.socket);
    stalled.socket.pause();
    const asked = Array.from({ length: 200 }, (_, i) => stalled.request(CMD.READ, (i % 15) * MIB, MIB));
    await new Promise((r) => setTimeout(r, 500));
    const other = await NbdClient.connect(served.socket);
    const t0 = Date.now();
    const reference = await openChain(leaf);
    for (let at = 0; at < SIZE; at += 4 * MIB) {
      const expected = new Uint8Array(4 * MIB);
      await reference.read(expected, at);
      assertBytesEqual(await other.read(at, 4 * MIB), expected, `the other client at ${at}`);
    }
    await reference.close();
    const otherMs = Date.now() - t0;
    const stats = served.server.connectionStats();
    const worst = Math.max(...stats.map((c) => c.bytesHeld + c.unread));
    assert.ok(worst <= maxBytesInFlight + 256 * 1024, `a connection holds ${worst} bytes of requests and replies (budget ${maxBytesInFlight})`);
    assert.ok(stats.some((c) => c.bytesHeld >= maxBytesInFlight - MIB), 'the stalled connection did fill its budget');
    console.log(`a client that stopped reading 200 x 1 MiB replies: its connection holds ${(worst / MIB).toFixed(1)} MiB (budget ${maxBytesInFlight / MIB} MiB); another client read ${SIZE / MIB} MiB meanwhile in ${otherMs} ms`);
    stalled.socket.resume();
    const replies = await Promise.all(asked);
    assert.ok(replies.every((r) => r.error === 0 && r.data!.length === MIB), 'the stalled client gets every reply once it reads');
    await Promise.all([stalled.disconnect(), other.disconnect()]);
  } finally {
    await served.close();
  }
});
