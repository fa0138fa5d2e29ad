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

export type ControlHandler = (op: string, args: Record<string, unknown>) => Promise<unknown>;

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
    socket.on('close', () => this.sockets.delete(socket));
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
        if (line) queue = queue.then(() => this.answer(socket, line, handler));
      }
      if (buffer.length > MAX_LINE) socket.destroy();
    });
  }

  private async answer(socket: Socket, line: string, handler: ControlHandler): Promise<void> {
    let id: unknown = null;
    let reply: Record<string, unknown>;
    try {
      const request = JSON.parse(line) as { id?: unknown; op?: unknown; args?: unknown };
      id = request.id ?? null;
      if (typeof request.op !== 'string') throw new DiskchainError('INVALID_ARGUMENT', 'a control request names an "op"');
      const args = typeof request.args === 'object' && request.args !== null && !Array.isArray(request.args) ? (request.args as Record<string, unknown>) : {};
      reply = { id, result: (await handler(request.op, args)) ?? null };
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
 * Sends one request to a worker and resolves with its result. QMP_CLOSED when nothing listens (no
 * worker), TIMEOUT after `timeoutMs` (default 30 s), the worker's own error otherwise.
 */
export function callControl(path: string, op: string, args: Record<string, unknown> = {}, options: { timeoutMs?: number } = {}): Promise<unknown> {
  const timeoutMs = options.timeoutMs ?? 30_000;
  return new Promise((resolve, reject) => {
    const socket = connect({ path });
    let buffer = '';
    let settled = false;
    const finish = (error: Error | undefined, value?: unknown): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      if (error) reject(error);
      else resolve(value);
    };
    const timer = setTimeout(() => finish(new DiskchainError('TIMEOUT', `the VM's worker did not answer "${op}" within ${timeoutMs} ms`, { file: path, op, timeoutMs })), timeoutMs);
    socket.setEncoding('utf8');
    socket.once('connect', () => socket.write(`${JSON.stringify({ id: 1, op, args })}\n`));
    socket.on('error', (e) => finish(new DiskchainError('QMP_CLOSED', `no worker answers on ${path}: ${e.message}`, { file: path }, { cause: e })));
    socket.on('close', () => finish(new DiskchainError('QMP_CLOSED', `the VM's worker closed the connection before answering "${op}"`, { file: path })));
    socket.on('data', (chunk: string) => {
      buffer += chunk;
      const nl = buffer.indexOf('\n');
      if (nl < 0) {
        if (buffer.length > MAX_LINE) finish(new DiskchainError('IO', 'the worker sent an overlong answer', { file: path }));
        return;
      }
      try {
        const reply = JSON.parse(buffer.slice(0, nl)) as { result?: unknown; error?: Record<string, unknown> };
        if (reply.error) finish(errorFromJson(reply.error));
        else finish(undefined, reply.result);
      } catch (e) {
        finish(new DiskchainError('IO', `the worker sent something that is not JSON: ${String(e)}`, { file: path }));
      }
    });
  });
}
