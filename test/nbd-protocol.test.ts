/**
 * The NBD server against the protocol, through a client written from doc/proto.md: reads equal the
 * chain's, replies (simple and structured) and errors are the ones the document names, block status is
 * the chain's map, oversized writes end only their own session, and the handshake answers every option.
 */
import { connect } from 'node:net';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { openChain } from '../src/chain/open-chain.js';
import { buildChain } from './helpers/merge-chain.js';
import { CMD, FLAG, NbdClient } from './helpers/nbd-client.js';
import { serveChain } from './helpers/nbd-serve.js';
import { assertBytesEqual, MIB, Rng, tempDir } from './helpers/vhdx-util.js';

let dir: string;
let cleanup: () => void;
let vhdxChain: string[];
before(async () => {
  ({ dir, cleanup } = tempDir('diskchain-nbd-protocol-'));
  vhdxChain = await buildChain(`${dir}/vhdx`, 'vhdx', 7);
});
after(() => cleanup?.());

test('reads through a served 4-layer chain equal the chain, with 64 requests in flight, structured and simple', async () => {
  const leaf = vhdxChain[3]!;
  const served = await serveChain(dir, leaf);
  const reference = await openChain(leaf);
  try {
    for (const structured of [true, false]) {
      const client = await NbdClient.connect(served.socket, { structured });
      assert.equal(client.size, reference.virtualSize);
      assert.equal(client.structured, structured);
      const rng = new Rng(structured ? 1 : 2);
      const asks = Array.from({ length: 64 }, () => {
        const length = 1 + rng.int(3 * MIB);
        return { offset: rng.int(reference.virtualSize - length), length };
      });
      const replies = await Promise.all(asks.map((a) => client.read(a.offset, a.length)));
      for (const [i, a] of asks.entries()) {
        const expected = new Uint8Array(a.length);
        await reference.read(expected, a.offset);
        assertBytesEqual(replies[i]!, expected, `read ${a.offset}+${a.length} (structured ${structured})`);
      }
      await client.disconnect();
    }
  } finally {
    await reference.close();
    await served.close();
  }
});

test('errors: read-only writes are EPERM, past the end EINVAL / ENOSPC, unknown commands and flags EINVAL; the session goes on', async () => {
  const served = await serveChain(dir, vhdxChain[3]!, { limits: { maxPayload: MIB } });
  try {
    for (const structured of [true, false]) {
      const c = await NbdClient.connect(served.socket, { structured });
      const size = c.size;
      const cases: Array<[string, Promise<{ error: number }>, number]> = [
        ['write on a read-only export', c.request(CMD.WRITE, 0, 512, { data: new Uint8Array(512) }), 1],
        ['trim on a read-only export', c.request(CMD.TRIM, 0, 512), 1],
        ['write zeroes on a read-only export', c.request(CMD.WRITE_ZEROES, 0, 512), 1],
        ['read past the end', c.request(CMD.READ, size - 512, 1024), 22],
        ['read at 2^63', c.request(CMD.READ, Number.MAX_SAFE_INTEGER, 1), 22],
        ['unknown command', c.request(42, 0, 0), 22],
        ['unknown command flag', c.request(CMD.READ, 0, 512, { flags: 0x100 }), 22],
        ['NO_HOLE on a read', c.request(CMD.READ, 0, 512, { flags: FLAG.NO_HOLE }), 22],
        ['FAST_ZERO, not advertised', c.request(CMD.WRITE_ZEROES, 0, 512, { flags: FLAG.FAST_ZERO }), 22],
        ['flush with a length', c.request(CMD.FLUSH, 0, 512), 22],
        ['block status without a context', c.request(CMD.BLOCK_STATUS, 0, 512), 22],
        ['read over the maximum payload', c.request(CMD.READ, 0, 2 * MIB), structured ? 75 : 22],
        ['flush', c.request(CMD.FLUSH, 0, 0), 0],
        ['cache', c.request(CMD.CACHE, 0, 4096), 0],
      ];
      for (const [what, p, error] of cases) assert.equal((await p).error, error, `${what} (structured ${structured})`);
      assert.equal((await c.read(4096, 4096)).length, 4096, 'the session still serves reads');
      assert.equal((await c.read(0, 0)).length, 0, 'a read of 0 bytes is answered');
      await c.disconnect();
    }
  } finally {
    await served.close();
  }
});

test('a WRITE longer than the maximum payload is answered with an error and ends that session only, before its payload is read', async () => {
  const leaf = (await buildChain(`${dir}/big-write`, 'vhdx', 11))[3]!;
  const served = await serveChain(dir, leaf, { writable: true });
  try {
    const bystander = await NbdClient.connect(served.socket);
    const before = await bystander.read(0, MIB);
    const hostile = await NbdClient.connect(served.socket);
    const heapBefore = process.memoryUsage().arrayBuffers;
    // 4 GiB - 1 announced, 64 KiB sent: the server must neither wait for nor allocate the rest.
    const r = hostile.request(CMD.WRITE, 0, 0xffffffff, { data: new Uint8Array(64 * 1024) });
    assert.equal((await r).error, 75, 'NBD_EOVERFLOW');
    await hostile.closed;
    assert.ok(process.memoryUsage().arrayBuffers - heapBefore < 64 * MIB, 'nothing near 4 GiB was allocated');
    assertBytesEqual(await bystander.read(0, MIB), before, 'the other client reads on');
    assert.ok(served.log.some((l) => /write of 4294967295 bytes/.test(l)), served.log.join('\n'));
    await bystander.disconnect();
  } finally {
    await served.close();
  }
});

test('base:allocation replies are the chain map (data allocated; zero and absent are holes that read as zeros)', async () => {
  const leaf = vhdxChain[3]!;
  const served = await serveChain(dir, leaf);
  const reference = await openChain(leaf);
  try {
    const c = await NbdClient.connect(served.socket, { allocation: true });
    assert.ok(c.contextId !== undefined, 'base:allocation was selected');
    const got: Array<[number, number]> = [];
    for (let at = 0; at < c.size; ) {
      const r = await c.request(CMD.BLOCK_STATUS, at, Math.min(c.size - at, 0xfffffe00));
      assert.equal(r.error, 0);
      for (const [length, flags] of r.extents!) {
        const last = got[got.length - 1];
        if (last && last[1] === flags) last[0] += length;
        else got.push([length, flags]);
        at += length;
      }
    }
    const expected: Array<[number, number]> = [];
    for (const e of await reference.mapAll()) {
      const flags = e.state === 'data' ? 0 : 3;
      const last = expected[expected.length - 1];
      if (last && last[1] === flags) last[0] += e.length;
      else expected.push([e.length, flags]);
    }
    assert.deepEqual(got, expected);
    const one = await c.request(CMD.BLOCK_STATUS, 512, 1024, { flags: FLAG.REQ_ONE });
    assert.equal(one.extents!.length, 1);
    assert.ok(one.extents![0]![0] <= 1024, 'REQ_ONE: one descriptor, no longer than asked');
    await c.disconnect();
  } finally {
    await reference.close();
    await served.close();
  }
});

/** Sends options by hand and returns each reply's type and data. */
async function optionExchange(socket: string, options: Array<[number, Buffer]>, clientFlags = 3): Promise<Array<Array<{ type: number; data: string }>>> {
  const s = connect({ path: socket });
  let buf = Buffer.alloc(0);
  let wake: (() => void) | undefined;
  let ended = false;
  s.on('data', (d: Buffer) => ((buf = Buffer.concat([buf, d])), wake?.()));
  s.on('close', () => ((ended = true), wake?.()));
  const read = async (n: number): Promise<Buffer> => {
    while (buf.length < n) {
      if (ended) throw new Error('closed');
      await new Promise<void>((r) => (wake = r));
    }
    const out = buf.subarray(0, n);
    buf = buf.subarray(n);
    return out;
  };
  await read(18);
  const flags = Buffer.alloc(4);
  flags.writeUInt32BE(clientFlags);
  s.write(flags);
  const all: Array<Array<{ type: number; data: string }>> = [];
  try {
    for (const [option, data] of options) {
      const h = Buffer.alloc(16);
      h.writeBigUInt64BE(0x49484156454f5054n, 0);
      h.writeUInt32BE(option, 8);
      h.writeUInt32BE(data.length, 12);
      s.write(Buffer.concat([h, data]));
      const replies: Array<{ type: number; data: string }> = [];
      for (;;) {
        const r = await read(20);
        const type = r.readUInt32BE(12);
        replies.push({ type, data: (await read(r.readUInt32BE(16))).toString('latin1') });
        if (type === 1 || type >= 2 ** 31) break;
      }
      all.push(replies);
    }
  } finally {
    s.destroy();
  }
  return all;
}

function goData(name: string, infos: number[] = []): Buffer {
  const n = Buffer.from(name);
  const b = Buffer.alloc(4 + n.length + 2 + 2 * infos.length);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  b.writeUInt16BE(infos.length, 4 + n.length);
  infos.forEach((i, k) => b.writeUInt16BE(i, 6 + n.length + 2 * k));
  return b;
}

test('handshake: every option is answered; unknown ones with NBD_REP_ERR_UNSUP, and negotiation continues', async () => {
  const served = await serveChain(dir, vhdxChain[1]!, { name: 'disk' });
  try {
    const ERR = 2 ** 31;
    const metaData = Buffer.concat([Buffer.from([0, 0, 0, 4]), Buffer.from('disk'), Buffer.from([0, 0, 0, 0])]);
    const [metaBeforeStructured, list, unknown, listWithData, infoMissing, info, structured, meta, starttls, malformedGo] = await optionExchange(served.socket, [
      [10, metaData],
      [3, Buffer.alloc(0)],
      [99, Buffer.from('whatever')],
      [3, Buffer.from('x')],
      [6, goData('nope')],
      [6, goData('disk', [1, 3])],
      [8, Buffer.alloc(0)],
      [9, metaData],
      [5, Buffer.alloc(0)],
      [7, Buffer.from([0, 0, 0, 200, 1, 2])],
    ]);
    assert.deepEqual(structured!.map((r) => r.type), [1], 'NBD_OPT_STRUCTURED_REPLY: ACK');
    assert.deepEqual(list!.map((r) => r.type), [2, 1], 'NBD_OPT_LIST: one NBD_REP_SERVER, then ACK');
    assert.equal(list![0]!.data.slice(4), 'disk');
    assert.equal(unknown![0]!.type, ERR + 1, 'unknown option: NBD_REP_ERR_UNSUP');
    assert.equal(listWithData![0]!.type, ERR + 3, 'NBD_OPT_LIST with data: NBD_REP_ERR_INVALID');
    assert.equal(infoMissing![0]!.type, ERR + 6, 'unknown export: NBD_REP_ERR_UNKNOWN');
    const infoTypes = info!.filter((r) => r.type === 3).map((r) => Buffer.from(r.data, 'latin1').readUInt16BE(0));
    assert.deepEqual(infoTypes.sort(), [0, 1, 3], 'NBD_INFO_EXPORT, NAME and BLOCK_SIZE');
    assert.equal(info![info!.length - 1]!.type, 1);
    assert.deepEqual(meta!.map((r) => r.type), [4, 1], 'LIST_META_CONTEXT with no query lists base:allocation');
    assert.ok(meta![0]!.data.endsWith('base:allocation'));
    assert.equal(metaBeforeStructured![0]!.type, ERR + 3, 'SET_META_CONTEXT before structured replies: NBD_REP_ERR_INVALID');
    assert.equal(starttls![0]!.type, ERR + 2, 'STARTTLS without TLS configured: NBD_REP_ERR_POLICY');
    assert.equal(malformedGo![0]!.type, ERR + 3, 'a malformed NBD_OPT_GO: NBD_REP_ERR_INVALID');
    await assert.rejects(optionExchange(served.socket, [[3, Buffer.alloc(0)]], 0x80), 'unknown client flags end the session');
  } finally {
    await served.close();
  }
});

test('a client that half-closes after sending its requests still gets every reply', async () => {
  const served = await serveChain(dir, vhdxChain[3]!);
  try {
    const c = await NbdClient.connect(served.socket);
    const asked = [c.read(0, 4096), c.read(MIB, 65536), c.read(5 * MIB + 3, 1000)];
    c.socket.end(); // FIN: nothing more will come from the client
    const got = await Promise.all(asked);
    assert.deepEqual(got.map((b) => b.length), [4096, 65536, 1000]);
    await c.closed;
  } finally {
    await served.close();
  }
});
