/**
 * The worker's control socket (`<vm>/run/control.sock`, mode 0600): JSON lines. A client sends one
 * request `{"id", "op", "args"}` per line and gets `{"id", "result"}` or `{"id", "error"}` (a
 * DiskchainError as its toJSON()) back. The CLI and the console open a connection per call.
 * Requests on one connection are answered in order; the worker itself runs one operation at a time.
 */
import { chmod, rm } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { DiskchainError, isDiskchainError, type ErrorCode } from '../io/errors.js';

/** A request line longer than this ends the connection. */
const MAX_LINE = 1024 * 1024;

/** The client connection a request came on: an operation spanning several requests (a group checkpoint) learns when its client is gone. */
export interface ControlPeer {
  readonly closed: Promise<void>;
  readonly isClosed: boolean;
}

export type ControlHandler = (op: string, args: Record<string, unknown>, peer: ControlPeer) => Promise<unknown>;

export class ControlServer {
  private readonly sockets = new Set<Socket>();

  private constructor(
    private readonly server: Server,
    readonly path: string,
  ) {}

  static async listen(path: string, handler: ControlHandler): Promise<ControlServer> {
    await rm(path, { force: true });
    const server = createServer();
    const control = new ControlServer(server, path);
    server.on('connection', (socket) => control.serve(socket, handler));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => {
        server.off('error', reject);
        resolve();
      });
    });
    await chmod(path, 0o600);
    return control;
  }

  /**
   * Stops accepting connections; the open ones get the answers they wait for (a `stop` request is
   * answered after the VM is off), and those still open after `graceMs` are closed.
   */
  async close(graceMs = 2000): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    const timer = setTimeout(() => {
      for (const s of this.sockets) s.destroy();
    }, graceMs);
    await closed;
    clearTimeout(timer);
    await rm(this.path, { force: true });
  }

  private serve(socket: Socket, handler: ControlHandler): void {
    this.sockets.add(socket);
    let gone!: () => void;
    const peer = { isClosed: false, closed: new Promise<void>((resolve) => (gone = resolve)) };
    socket.on('close', () => {
      this.sockets.delete(socket);
      peer.isClosed = true;
      gone();
    });
    socket.on('error', () => socket.destroy());
    socket.setEncoding('utf8');
    let buffer = '';
    let queue: Promise<void> = Promise.resolve();
    socket.on('data', (chunk: string) => {
      buffer += chunk;
      let nl: number;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, nl).trim();
        buffer = buffer.slice(nl + 1);
        if (line) queue = queue.then(() => this.answer(socket, line, handler, peer));
      }
      if (buffer.length > MAX_LINE) socket.destroy();
    });
  }

  private async answer(socket: Socket, line: string, handler: ControlHandler, peer: ControlPeer): Promise<void> {
    let id: unknown = null;
    let reply: Record<string, unknown>;
    try {
      const request = JSON.parse(line) as { id?: unknown; op?: unknown; args?: unknown };
      id = request.id ?? null;
      if (typeof request.op !== 'string') throw new DiskchainError('INVALID_ARGUMENT', 'a control request names an "op"');
      const args = typeof request.args === 'object' && request.args !== null && !Array.isArray(request.args) ? (request.args as Record<string, unknown>) : {};
      reply = { id, result: (await handler(request.op, args, peer)) ?? null };
    } catch (e) {
      const error = isDiskchainError(e) ? e.toJSON() : { name: 'Error', code: 'IO', message: e instanceof SyntaxError ? `not JSON: ${e.message}` : String(e) };
      reply = { id, error };
    }
    if (!socket.destroyed) socket.write(`${JSON.stringify(reply)}\n`);
  }
}

/** A DiskchainError again from its toJSON() (the message already carries the file). */
export function errorFromJson(json: Record<string, unknown>): DiskchainError {
  const { name: _name, code, message, ...details } = json;
  const e = new DiskchainError((typeof code === 'string' ? code : 'IO') as ErrorCode, '', details);
  e.message = typeof message === 'string' ? message : 'the worker failed';
  return e;
}

/**
 * A connection to a worker that stays open across requests (a group checkpoint's exchange: the
 * worker holds the operation for as long as its coordinator's connection lives). One request at a
 * time. QMP_CLOSED when nothing listens or the worker closes the connection, TIMEOUT after
 * `timeoutMs`, the worker's own error otherwise.
 */
export class ControlClient {
  private buffer = '';
  private waiting: ((line: string | Error) => void) | undefined;
  private failure: Error | undefined;

  private constructor(
    private readonly socket: Socket,
    readonly path: string,
  ) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      this.buffer += chunk;
      const nl = this.buffer.indexOf('\n');
      if (nl < 0) {
        if (this.buffer.length > MAX_LINE) this.fail(new DiskchainError('IO', 'the worker sent an overlong answer', { file: path }));
        return;
      }
      const line = this.buffer.slice(0, nl);
      this.buffer = this.buffer.slice(nl + 1);
      const w = this.waiting;
      this.waiting = undefined;
      w?.(line);
    });
    socket.on('error', (e) => this.fail(new DiskchainError('QMP_CLOSED', `no worker answers on ${path}: ${e.message}`, { file: path }, { cause: e })));
    socket.on('close', () => this.fail(new DiskchainError('QMP_CLOSED', "the VM's worker closed the connection", { file: path })));
  }

  static connect(path: string): Promise<ControlClient> {
    return new Promise((resolve, reject) => {
      const socket = connect({ path });
      socket.once('connect', () => {
        socket.off('error', reject);
        resolve(new ControlClient(socket, path));
      });
      socket.once('error', (e) => reject(new DiskchainError('QMP_CLOSED', `no worker answers on ${path}: ${e.message}`, { file: path }, { cause: e })));
    });
  }

  private fail(e: Error): void {
    this.failure ??= e;
    const w = this.waiting;
    this.waiting = undefined;
    w?.(this.failure);
    this.socket.destroy();
  }

  async call(op: string, args: Record<string, unknown> = {}, options: { timeoutMs?: number } = {}): Promise<unknown> {
    if (this.failure) throw this.failure;
    const timeoutMs = options.timeoutMs ?? 30_000;
    const line = await new Promise<string | Error>((resolve) => {
      const timer = setTimeout(() => resolve(new DiskchainError('TIMEOUT', `the VM's worker did not answer "${op}" within ${timeoutMs} ms`, { file: this.path, op, timeoutMs })), timeoutMs);
      this.waiting = (x) => {
        clearTimeout(timer);
        resolve(x);
      };
      this.socket.write(`${JSON.stringify({ id: 1, op, args })}\n`);
    });
    if (line instanceof Error) {
      this.close();
      throw line;
    }
    let reply: { result?: unknown; error?: Record<string, unknown> };
    try {
      reply = JSON.parse(line) as typeof reply;
    } catch (e) {
      throw new DiskchainError('IO', `the worker sent something that is not JSON: ${String(e)}`, { file: this.path });
    }
    if (reply.error) throw errorFromJson(reply.error);
    return reply.result;
  }

  /** Ends the connection (the worker sees its client gone). */
  close(): void {
    this.failure ??= new DiskchainError('QMP_CLOSED', 'the connection to the worker is closed', { file: this.path });
    this.socket.destroy();
  }
}

/**
 * Sends one request to a worker on a connection of its own and resolves with its result. QMP_CLOSED
 * when nothing listens (no worker), TIMEOUT after `timeoutMs` (default 30 s), the worker's own error
 * otherwise.
 */
export async function callControl(path: string, op: string, args: Record<string, unknown> = {}, options: { timeoutMs?: number } = {}): Promise<unknown> {
  const client = await ControlClient.connect(path);
  try {
    return await client.call(op, args, options);
  } finally {
    client.close();
  }
}
