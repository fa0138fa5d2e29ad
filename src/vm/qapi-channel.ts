/**
 * The wire protocol QMP and qemu-guest-agent share (QEMU's docs/interop/qmp-spec.rst, §2): JSON
 * objects over a stream, one per line. A command `{"execute", "arguments", "id"}` is answered by
 * `{"return", "id"}` or `{"error": {"class", "desc"}, "id"}`; QMP also sends asynchronous
 * `{"event", "data", "timestamp"}` and, first, a greeting. Answers carry the command's id back
 * (qapi/qmp-dispatch.c), so each pending command is matched by id and times out on its own.
 *
 * This module frames messages and matches answers; qmp.ts (greeting, capabilities, events) and
 * guest-agent.ts (resynchronisation) add what is particular to each end.
 */
import { connect, type Socket } from 'node:net';
import { DiskchainError } from '../io/errors.js';

/** A message no longer than this is accepted (query-qmp-schema answers are a few hundred KiB). */
const MAX_MESSAGE = 16 * 1024 * 1024;

export type QapiMessage = Record<string, unknown>;

export interface CallOptions {
  /** Milliseconds before the call fails with TIMEOUT (the command may still run in QEMU). */
  timeoutMs?: number;
  signal?: AbortSignal;
}

interface Pending {
  command: string;
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout;
  onAbort?: () => void;
  signal?: AbortSignal;
}

export class QapiChannel {
  /** Called for every message that is not an answer to a pending command (events, greeting, stale answers). */
  onMessage: (message: QapiMessage) => void = () => {};
  /** Settles once, when the connection ends, with the reason (a QMP_CLOSED error). */
  readonly closed: Promise<DiskchainError>;

  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private buffer = '';
  private closeReason: DiskchainError | undefined;
  private markClosed!: (reason: DiskchainError) => void;

  private constructor(
    private readonly socket: Socket,
    /** Names the other end in messages: "QMP" or "guest agent", with the socket path. */
    readonly what: string,
  ) {
    this.closed = new Promise((resolve) => (this.markClosed = resolve));
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.receive(chunk));
    socket.on('error', (e) => this.shutDown(`${what}: ${e.message}`));
    socket.on('close', () => this.shutDown(`${what}: connection closed`));
  }

  /** Connects to a unix socket; fails with QMP_CLOSED when nothing listens there, TIMEOUT when it takes too long. */
  static open(path: string, what: string, options: CallOptions = {}): Promise<QapiChannel> {
    const timeoutMs = options.timeoutMs ?? 10_000;
    return new Promise((resolve, reject) => {
      const socket = connect({ path });
      const fail = (e: DiskchainError): void => {
        clearTimeout(timer);
        options.signal?.removeEventListener('abort', onAbort);
        socket.destroy();
        reject(e);
      };
      const timer = setTimeout(() => fail(new DiskchainError('TIMEOUT', `${what}: no connection after ${timeoutMs} ms`, { file: path })), timeoutMs);
      const onAbort = (): void => fail(new DiskchainError('ABORTED', `${what}: connection cancelled`, { file: path }));
      options.signal?.addEventListener('abort', onAbort, { once: true });
      socket.once('error', (e) => fail(new DiskchainError('QMP_CLOSED', `${what}: cannot connect: ${e.message}`, { file: path }, { cause: e })));
      socket.once('connect', () => {
        clearTimeout(timer);
        options.signal?.removeEventListener('abort', onAbort);
        socket.removeAllListeners('error');
        resolve(new QapiChannel(socket, `${what} (${path})`));
      });
    });
  }

  get isClosed(): boolean {
    return this.closeReason !== undefined;
  }

  /** Sends one command and resolves with its "return" value; an "error" answer rejects with QMP_ERROR. */
  call(command: string, args?: Record<string, unknown>, options: CallOptions = {}): Promise<unknown> {
    if (this.closeReason) return Promise.reject(this.closeReason);
    if (options.signal?.aborted) return Promise.reject(new DiskchainError('ABORTED', `${this.what}: ${command} cancelled`));
    const id = this.nextId++;
    const timeoutMs = options.timeoutMs ?? 30_000;
    return new Promise((resolve, reject) => {
      const entry: Pending = {
        command,
        resolve,
        reject,
        timer: setTimeout(() => this.settle(id, new DiskchainError('TIMEOUT', `${this.what}: no answer to ${command} after ${timeoutMs} ms`, { command, timeoutMs })), timeoutMs),
      };
      if (options.signal) {
        entry.signal = options.signal;
        entry.onAbort = () => this.settle(id, new DiskchainError('ABORTED', `${this.what}: ${command} cancelled`, { command }));
        options.signal.addEventListener('abort', entry.onAbort, { once: true });
      }
      this.pending.set(id, entry);
      this.send({ execute: command, ...(args ? { arguments: args } : {}), id });
    });
  }

  /** Writes one message (a line of JSON). */
  send(message: QapiMessage): void {
    if (!this.closeReason) this.socket.write(JSON.stringify(message) + '\n');
  }

  /** Closes the connection; pending calls reject with QMP_CLOSED. */
  async close(): Promise<void> {
    this.socket.end();
    this.socket.destroy();
    await this.closed;
  }

  private receive(chunk: string): void {
    this.buffer += chunk;
    let newline: number;
    while ((newline = this.buffer.indexOf('\n')) >= 0) {
      // The agent puts a 0xFF byte (decoded as U+FFFD) before its answer to guest-sync-delimited.
      const line = this.buffer.slice(0, newline).replace(/^[\uFFFD\s]+/, '').trim();
      this.buffer = this.buffer.slice(newline + 1);
      if (line.length > 0) this.dispatch(line);
    }
    if (this.buffer.length > MAX_MESSAGE) this.shutDown(`${this.what}: a message longer than ${MAX_MESSAGE} bytes`);
  }

  private dispatch(line: string): void {
    let message: unknown;
    try {
      message = JSON.parse(line);
    } catch {
      this.shutDown(`${this.what}: not JSON: ${line.slice(0, 200)}`);
      return;
    }
    if (typeof message !== 'object' || message === null || Array.isArray(message)) {
      this.shutDown(`${this.what}: not a JSON object: ${line.slice(0, 200)}`);
      return;
    }
    const m = message as QapiMessage;
    const id = m.id;
    if (typeof id === 'number' && this.pending.has(id) && ('return' in m || 'error' in m)) {
      const entry = this.pending.get(id)!;
      if ('error' in m) {
        const err = (m.error ?? {}) as { class?: unknown; desc?: unknown };
        this.settle(id, new DiskchainError('QMP_ERROR', `${this.what}: ${entry.command}: ${String(err.desc ?? 'error')}`, { command: entry.command, class: err.class, desc: err.desc }));
      } else {
        this.settle(id, undefined, m.return);
      }
      return;
    }
    this.onMessage(m);
  }

  private settle(id: number, error: Error | undefined, value?: unknown): void {
    const entry = this.pending.get(id);
    if (!entry) return;
    this.pending.delete(id);
    clearTimeout(entry.timer);
    if (entry.onAbort) entry.signal?.removeEventListener('abort', entry.onAbort);
    if (error) entry.reject(error);
    else entry.resolve(value);
  }

  private shutDown(message: string): void {
    if (this.closeReason) return;
    this.closeReason = new DiskchainError('QMP_CLOSED', message);
    this.socket.destroy();
    for (const id of [...this.pending.keys()]) {
      const entry = this.pending.get(id)!;
      this.settle(id, new DiskchainError('QMP_CLOSED', `${message} before ${entry.command} was answered`, { command: entry.command }));
    }
    this.markClosed(this.closeReason);
  }
}
