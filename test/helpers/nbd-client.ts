/**
 * A small NBD client for tests: fixed newstyle handshake (optionally structured replies and
 * base:allocation), then requests with many in flight, matched to replies by cookie. It is written
 * from doc/proto.md independently of src/server, whose constants it does not import, so that a mistake
 * in the server's tables is not mirrored here.
 */
import { connect, type Socket } from 'node:net';

export const CMD = { READ: 0, WRITE: 1, DISC: 2, FLUSH: 3, TRIM: 4, CACHE: 5, WRITE_ZEROES: 6, BLOCK_STATUS: 7 } as const;
export const FLAG = { FUA: 1, NO_HOLE: 2, DF: 4, REQ_ONE: 8, FAST_ZERO: 16 } as const;
const IHAVEOPT = 0x49484156454f5054n;

export interface Reply {
  error: number;
  /** READ: the bytes, assembled from data and hole chunks. */
  data?: Buffer;
  /** BLOCK_STATUS: [length, flags] descriptors. */
  extents?: Array<[number, number]>;
  message?: string;
}

export interface ClientOptions {
  structured?: boolean;
  allocation?: boolean;
  exportName?: string;
}

type Pending = { type: number; offset: number; length: number; resolve: (r: Reply) => void; reply: Reply };

/** Reads exact byte counts from a socket (test-side; unbounded). */
class Bytes {
  private chunks: Buffer[] = [];
  private have = 0;
  private waiter: (() => void) | undefined;
  ended = false;
  constructor(socket: Socket) {
    socket.on('data', (d: Buffer) => {
      this.chunks.push(d);
      this.have += d.length;
      this.waiter?.();
    });
    const end = (): void => {
      this.ended = true;
      this.waiter?.();
    };
    socket.on('end', end);
    socket.on('close', end);
    socket.on('error', end);
  }
  async read(n: number): Promise<Buffer> {
    while (this.have < n) {
      if (this.ended) throw new Error(`connection closed (wanted ${n} bytes, have ${this.have})`);
      await new Promise<void>((r) => (this.waiter = r));
      this.waiter = undefined;
    }
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    this.chunks = all.length > n ? [all.subarray(n)] : [];
    this.have -= n;
    return all.subarray(0, n);
  }
}

export class NbdClient {
  size = 0;
  flags = 0;
  blockSize: [number, number, number] | undefined;
  contextId: number | undefined;
  structured = false;
  private readonly bytes: Bytes;
  private readonly pending = new Map<bigint, Pending>();
  private nextCookie = 1n;
  closed: Promise<void>;

  private constructor(readonly socket: Socket) {
    this.bytes = new Bytes(socket);
    this.closed = new Promise((r) => socket.once('close', () => r()));
  }

  static async connect(where: string | number, options: ClientOptions = {}): Promise<NbdClient> {
    const socket = typeof where === 'string' ? connect({ path: where }) : connect({ port: where, host: '127.0.0.1' });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const c = new NbdClient(socket);
    await c.handshake(options);
    void c.replyLoop();
    return c;
  }

  /** Sends an option and collects replies until a final one (ACK or error). */
  private async option(option: number, data: Buffer): Promise<Array<{ type: number; data: Buffer }>> {
    const h = Buffer.alloc(16);
    h.writeBigUInt64BE(IHAVEOPT, 0);
    h.writeUInt32BE(option, 8);
    h.writeUInt32BE(data.length, 12);
    this.socket.write(Buffer.concat([h, data]));
    const out: Array<{ type: number; data: Buffer }> = [];
    for (;;) {
      const r = await this.bytes.read(20);
      if (r.readBigUInt64BE(0) !== 0x3e889045565a9n) throw new Error('bad option reply magic');
      if (r.readUInt32BE(8) !== option) throw new Error('option reply for another option');
      const type = r.readUInt32BE(12);
      const payload = await this.bytes.read(r.readUInt32BE(16));
      out.push({ type, data: payload });
      if (type === 1 || type >= 2 ** 31) return out;
    }
  }

  private async handshake(o: ClientOptions): Promise<void> {
    const g = await this.bytes.read(18);
    if (g.readBigUInt64BE(0) !== 0x4e42444d41474943n || g.readBigUInt64BE(8) !== IHAVEOPT) throw new Error('not an NBD newstyle server');
    if ((g.readUInt16BE(16) & 3) !== 3) throw new Error('server lacks fixed newstyle or no-zeroes');
    const f = Buffer.alloc(4);
    f.writeUInt32BE(3, 0);
    this.socket.write(f);
    const name = Buffer.from(o.exportName ?? '', 'utf8');
    if (o.structured ?? true) {
      const r = await this.option(8, Buffer.alloc(0));
      this.structured = r[r.length - 1]!.type === 1;
    }
    if (o.allocation) {
      const q = Buffer.from('base:allocation');
      const d = Buffer.alloc(4 + name.length + 4 + 4 + q.length);
      d.writeUInt32BE(name.length, 0);
      name.copy(d, 4);
      d.writeUInt32BE(1, 4 + name.length);
      d.writeUInt32BE(q.length, 8 + name.length);
      q.copy(d, 12 + name.length);
      for (const r of await this.option(10, d)) if (r.type === 4) this.contextId = r.data.readUInt32BE(0);
    }
    const go = Buffer.alloc(4 + name.length + 2 + 2);
    go.writeUInt32BE(name.length, 0);
    name.copy(go, 4);
    go.writeUInt16BE(1, 4 + name.length);
    go.writeUInt16BE(3, 6 + name.length); // NBD_INFO_BLOCK_SIZE
    const replies = await this.option(7, go);
    const last = replies[replies.length - 1]!;
    if (last.type !== 1) throw new Error(`NBD_OPT_GO failed: 0x${last.type.toString(16)} ${last.data.toString()}`);
    for (const r of replies) {
      if (r.type !== 3) continue;
      const info = r.data.readUInt16BE(0);
      if (info === 0) {
        this.size = Number(r.data.readBigUInt64BE(2));
        this.flags = r.data.readUInt16BE(10);
      } else if (info === 3) this.blockSize = [r.data.readUInt32BE(2), r.data.readUInt32BE(6), r.data.readUInt32BE(10)];
    }
  }

  /** Sends one request; the promise resolves with its reply. */
  request(type: number, offset: number, length: number, options: { flags?: number; data?: Uint8Array } = {}): Promise<Reply> {
    const cookie = this.nextCookie++;
    const h = Buffer.alloc(28);
    h.writeUInt32BE(0x25609513, 0);
    h.writeUInt16BE(options.flags ?? 0, 4);
    h.writeUInt16BE(type, 6);
    h.writeBigUInt64BE(cookie, 8);
    h.writeBigUInt64BE(BigInt(offset), 16);
    h.writeUInt32BE(length, 24);
    const p = new Promise<Reply>((resolve) => this.pending.set(cookie, { type, offset, length, resolve, reply: { error: 0 } }));
    this.socket.write(options.data ? Buffer.concat([h, options.data]) : h);
    return p;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    const r = await this.request(CMD.READ, offset, length);
    if (r.error) throw new Error(`read ${offset}+${length}: error ${r.error} ${r.message ?? ''}`);
    return r.data!;
  }

  async write(offset: number, data: Uint8Array, flags = 0): Promise<void> {
    const r = await this.request(CMD.WRITE, offset, data.length, { data, flags });
    if (r.error) throw new Error(`write ${offset}+${data.length}: error ${r.error} ${r.message ?? ''}`);
  }

  async disconnect(): Promise<void> {
    const h = Buffer.alloc(28);
    h.writeUInt32BE(0x25609513, 0);
    h.writeUInt16BE(CMD.DISC, 6);
    this.socket.end(h);
    await this.closed;
  }

  private async replyLoop(): Promise<void> {
    try {
      for (;;) {
        const head = await this.bytes.read(4);
        const magic = head.readUInt32BE(0);
        if (magic === 0x67446698) {
          const rest = await this.bytes.read(12);
          const cookie = rest.readBigUInt64BE(4);
          const p = this.take(cookie);
          p.reply.error = rest.readUInt32BE(0);
          if (p.type === CMD.READ && p.reply.error === 0) p.reply.data = Buffer.from(await this.bytes.read(p.length));
          p.resolve(p.reply);
        } else if (magic === 0x668e33ef) {
          const rest = await this.bytes.read(16);
          const flags = rest.readUInt16BE(0);
          const type = rest.readUInt16BE(2);
          const cookie = rest.readBigUInt64BE(4);
          const payload = Buffer.from(await this.bytes.read(rest.readUInt32BE(12)));
          const p = this.pending.get(cookie);
          if (!p) throw new Error(`structured reply for unknown cookie ${cookie}`);
          if (p.type === CMD.READ && !p.reply.data) p.reply.data = Buffer.alloc(p.length);
          if (type === 1) payload.copy(p.reply.data!, Number(payload.readBigUInt64BE(0)) - p.offset, 8);
          else if (type === 2) p.reply.data!.fill(0, Number(payload.readBigUInt64BE(0)) - p.offset, Number(payload.readBigUInt64BE(0)) - p.offset + payload.readUInt32BE(8));
          else if (type === 5) {
            p.reply.extents = [];
            for (let at = 4; at < payload.length; at += 8) p.reply.extents.push([payload.readUInt32BE(at), payload.readUInt32BE(at + 4)]);
          } else if (type & 0x8000) {
            p.reply.error = payload.readUInt32BE(0);
            p.reply.message = payload.toString('utf8', 6, 6 + payload.readUInt16BE(4));
          }
          if (flags & 1) {
            this.pending.delete(cookie);
            p.resolve(p.reply);
          }
        } else throw new Error(`bad reply magic 0x${magic.toString(16)}`);
      }
    } catch {
      for (const p of this.pending.values()) p.resolve({ error: -1, message: 'connection closed' });
      this.pending.clear();
    }
  }

  private take(cookie: bigint): Pending {
    const p = this.pending.get(cookie);
    if (!p) throw new Error(`reply for unknown cookie ${cookie}`);
    this.pending.delete(cookie);
    return p;
  }
}
