/**
 * One client connection, as a state machine:
 *
 *   handshake ──(NBD_OPT_GO / NBD_OPT_EXPORT_NAME)──> transmission ──(NBD_CMD_DISC, end of stream)──> draining ──> closed
 *       │  └─(NBD_OPT_STARTTLS: ACK, then the socket is wrapped in TLS; negotiation state starts over)
 *       └──────(NBD_OPT_ABORT, a violation, the handshake timeout)───────────────────────────────────────────> closed
 *
 * Handshake and transmission live in handshake.ts and transmission.ts; this file owns the socket, the
 * bounded reader, the per-connection budget and the orderly or hard close. A violation the protocol lets
 * the server end the session for (a bad magic, a payload over the limit, unknown client flags) closes this
 * connection only; nothing here is shared with other connections but the exports.
 */
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { TLSSocket, type SecureContext } from 'node:tls';
import { Budget } from './budget.js';
import { ByteReader, EndOfStream } from './byte-reader.js';
import type { NbdExport } from './export.js';
import { negotiate } from './handshake.js';
import { transmit } from './transmission.js';

export interface ServerLimits {
  /** Largest READ or WRITE payload (advertised as the maximum block size); larger WRITEs end the connection. */
  maxPayload: number;
  /** Request and reply bytes one connection may hold at once. */
  maxBytesInFlight: number;
  /** Requests one connection may have in flight at once. */
  maxRequestsInFlight: number;
  /** Bytes read ahead of the parser before the socket is paused. */
  readAhead: number;
  /** Largest option a client may send during the handshake (export names and queries). */
  maxOptionLength: number;
  /** The handshake must end (in transmission or a close) within this many milliseconds. */
  handshakeTimeoutMs: number;
}

export const DEFAULT_LIMITS: ServerLimits = {
  maxPayload: 32 * 1024 * 1024,
  maxBytesInFlight: 64 * 1024 * 1024,
  maxRequestsInFlight: 128,
  readAhead: 256 * 1024,
  maxOptionLength: 64 * 1024,
  handshakeTimeoutMs: 10_000,
};

/** What connections need from their server. */
export interface ConnectionContext {
  /** The export a client names; "" is the default export when the server has exactly one. */
  findExport(name: string): NbdExport | undefined;
  listExports(): readonly NbdExport[];
  /**
   * Set: TLS is required before anything but NBD_OPT_STARTTLS and NBD_OPT_ABORT (FORCEDTLS);
   * `verifyClients`: a client must present a certificate the context's CA signed.
   */
  tls: { context: SecureContext; verifyClients: boolean } | undefined;
  limits: ServerLimits;
  log(message: string): void;
}

/** How long a closing connection may take to hand its last replies to a client that does not read. */
const CLOSE_GRACE_MS = 10_000;

export class NbdConnection {
  readonly reader: ByteReader;
  readonly budget: Budget;
  /** Resolves when the socket has closed. */
  readonly gone: Promise<void>;
  /** The socket in use: the accepted one, or the TLS socket wrapping it after NBD_OPT_STARTTLS. */
  private socket: Duplex;
  private tlsActive = false;
  private readonly inFlight = new Set<Promise<void>>();
  private closed = false;
  private stopping = false;

  constructor(
    private readonly raw: Socket,
    readonly ctx: ConnectionContext,
    readonly id: string,
  ) {
    this.socket = raw;
    this.reader = new ByteReader(ctx.limits.readAhead);
    this.budget = new Budget(ctx.limits.maxBytesInFlight, ctx.limits.maxRequestsInFlight);
    raw.on('error', () => undefined); // reported through the reader or the close
    this.gone = new Promise((resolve) => raw.once('close', () => resolve()));
  }

  get limits(): ServerLimits {
    return this.ctx.limits;
  }
  get tls(): boolean {
    return this.tlsActive;
  }
  get isClosed(): boolean {
    return this.closed;
  }

  /** Runs the connection to its end; never throws. */
  async run(): Promise<void> {
    this.reader.attach(this.raw);
    const timer = setTimeout(() => this.violation('the handshake took too long'), this.ctx.limits.handshakeTimeoutMs);
    try {
      const session = await negotiate(this).finally(() => clearTimeout(timer));
      if (session && !this.stopping) await transmit(this, session);
      await Promise.allSettled([...this.inFlight]);
      this.endGracefully();
    } catch (e) {
      if (!(e instanceof EndOfStream)) this.ctx.log(`${this.id}: ${e instanceof Error ? e.message : String(e)}`);
      this.destroy();
    }
  }

  /** Server shutdown: no new requests are read; those in flight finish and are answered, then it closes. */
  stop(): void {
    this.stopping = true;
    this.reader.detach();
    this.reader.fail(new EndOfStream(0));
    this.budget.cancel();
  }


  /** Ends the connection now, whatever it still had to send. */
  kill(): void {
    this.destroy();
  }

  /** What this connection holds: budget bytes and requests, bytes received and unparsed, bytes queued to send. */
  stats(): { bytesHeld: number; requestsHeld: number; unread: number; unsent: number } {
    return { bytesHeld: this.budget.bytesHeld, requestsHeld: this.budget.requestsHeld, unread: this.reader.pending, unsent: this.socket.writableLength };
  }

  /** Ends the session after answering what is in flight: no more requests are read (the client's log line says why). */
  finishAfterReplies(reason: string): void {
    this.ctx.log(`${this.id}: disconnecting: ${reason}`);
    this.stop();
  }

  /** A breach of the protocol: the session ends at once (a hard disconnect). */
  violation(reason: string): void {
    if (this.closed) return;
    this.ctx.log(`${this.id}: disconnected: ${reason}`);
    this.destroy();
  }

  /** Sends `parts` in one write; `release` bytes of the budget (and a request slot) are given back once they have left. */
  send(parts: readonly Uint8Array[], release?: number): void {
    const done = release === undefined ? undefined : () => this.budget.release(release);
    if (this.closed || this.socket.destroyed) return void done?.();
    this.socket.cork();
    parts.forEach((p, i) => this.socket.write(p, i === parts.length - 1 ? done : undefined));
    this.socket.uncork();
  }

  /** Sends during the handshake and waits until the bytes have left (a client that never reads stalls only itself). */
  sendAndWait(parts: readonly Uint8Array[]): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.closed || this.socket.destroyed) return reject(new EndOfStream(0));
      this.socket.cork();
      parts.forEach((p, i) => this.socket.write(p, i === parts.length - 1 ? (e?: Error | null) => (e ? reject(e) : resolve()) : undefined));
      this.socket.uncork();
    });
  }

  /** Keeps a request's handler until it settles, so a close can wait for it. */
  track(p: Promise<void>): void {
    const t = p.catch((e: unknown) => this.ctx.log(`${this.id}: ${e instanceof Error ? e.message : String(e)}`)).finally(() => this.inFlight.delete(t));
    this.inFlight.add(t);
  }

  /** NBD_OPT_STARTTLS after its ACK has left: the socket is wrapped and the handshake continues inside TLS. */
  async startTls(): Promise<void> {
    const tls = this.ctx.tls;
    if (!tls) throw new Error('TLS is not configured');
    if (this.reader.detach() > 0) throw new Error('the client sent data before the TLS handshake');
    const secure = new TLSSocket(this.raw, { isServer: true, secureContext: tls.context, requestCert: tls.verifyClients, rejectUnauthorized: tls.verifyClients });
    await new Promise<void>((resolve, reject) => {
      secure.once('secure', resolve);
      secure.once('error', reject);
      secure.once('close', () => reject(new EndOfStream(0)));
    });
    secure.on('error', () => undefined);
    this.socket = secure;
    this.tlsActive = true;
    this.reader.attach(secure);
  }

  private endGracefully(): void {
    if (this.closed) return;
    this.closed = true;
    this.socket.end();
    // Whatever the client still sends is read and dropped, so its end of the stream is seen and the socket closes.
    this.socket.on('data', () => undefined);
    this.socket.resume();
    setTimeout(() => this.raw.destroy(), CLOSE_GRACE_MS).unref();
  }

  private destroy(): void {
    this.closed = true;
    this.reader.fail(new EndOfStream(0));
    this.socket.destroy();
    this.raw.destroy();
  }
}
