import type { Duplex } from 'node:stream';

/** The reader's error when the peer closed its side (or the socket failed) before enough bytes came. */
export class EndOfStream extends Error {
  constructor(readonly buffered: number) {
    super('the client closed the connection');
  }
}

/**
 * Reads exact byte counts from a socket with bounded buffering: the socket is paused once more than
 * `highWater` bytes (or the pending read's size, when larger) wait unread, so a client that sends faster
 * than the server works is held back by TCP, not by memory. One read at a time.
 */
export class ByteReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private want: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | undefined;
  private ended: Error | undefined;
  private stream: Duplex | undefined;
  private readonly onData = (b: Buffer): void => this.push(b);
  private readonly onEnd = (): void => this.fail(new EndOfStream(this.buffered));
  private readonly onError = (e: Error): void => this.fail(e);

  constructor(private readonly highWater: number) {}

  /** Starts reading from `stream` (a socket, or the TLS socket that replaced it). */
  attach(stream: Duplex): void {
    this.stream = stream;
    stream.on('data', this.onData);
    stream.on('end', this.onEnd);
    stream.on('close', this.onEnd);
    stream.on('error', this.onError);
  }

  /** Stops reading from the stream (before it is handed to TLS); returns the bytes left unread. */
  detach(): number {
    const s = this.stream;
    if (s) {
      s.pause();
      s.off('data', this.onData);
      s.off('end', this.onEnd);
      s.off('close', this.onEnd);
      s.off('error', this.onError);
    }
    this.stream = undefined;
    return this.buffered;
  }

  /** Bytes received and not yet read. */
  get pending(): number {
    return this.buffered;
  }

  /** The next `n` bytes; rejects with EndOfStream if the stream ends first. */
  read(n: number): Promise<Buffer> {
    if (this.want) return Promise.reject(new Error('ByteReader: one read at a time'));
    if (this.buffered >= n) return Promise.resolve(this.take(n));
    if (this.ended) return Promise.reject(this.ended);
    return new Promise<Buffer>((resolve, reject) => {
      this.want = { n, resolve, reject };
      this.stream?.resume();
    });
  }

  private push(b: Buffer): void {
    this.chunks.push(b);
    this.buffered += b.length;
    const w = this.want;
    if (w && this.buffered >= w.n) {
      this.want = undefined;
      w.resolve(this.take(w.n));
    }
    if (this.buffered >= Math.max(this.highWater, this.want?.n ?? 0)) this.stream?.pause();
  }

  /** Ends reading: the pending read and every later one reject with `e` (the first reason given). */
  fail(e: Error): void {
    this.ended ??= e;
    const w = this.want;
    this.want = undefined;
    w?.reject(this.ended);
  }

  private take(n: number): Buffer {
    const first = this.chunks[0];
    let out: Buffer;
    if (first && first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      out = Buffer.allocUnsafe(n);
      let at = 0;
      while (at < n) {
        const c = this.chunks[0]!;
        const k = Math.min(c.length, n - at);
        c.copy(out, at, 0, k);
        at += k;
        if (k === c.length) this.chunks.shift();
        else this.chunks[0] = c.subarray(k);
      }
    }
    this.buffered -= n;
    if (this.buffered < this.highWater) this.stream?.resume();
    return out;
  }
}
