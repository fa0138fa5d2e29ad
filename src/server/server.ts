import { chmod } from 'node:fs/promises';
import { createServer, isIP, type Server, type Socket } from 'node:net';
import { createSecureContext } from 'node:tls';
import { DiskchainError } from '../io/errors.js';
import { DEFAULT_LIMITS, NbdConnection, type ConnectionContext, type ServerLimits } from './connection.js';
import type { NbdExport } from './export.js';

/** Where to listen: a unix socket, or a TCP address (loopback unless `allowRemote`). */
export type ListenOptions = { socket: string } | { host?: string; port: number; allowRemote?: boolean };

/** Where the server listens, and a URI for each export that clients (qemu, libnbd) accept. */
export interface ServerAddress {
  socket?: string;
  host?: string;
  port?: number;
  tls: boolean;
  uris: Record<string, string>;
}

export interface NbdServerOptions {
  exports: NbdExport[];
  /**
   * PEM certificate (chain) and key: TLS becomes required on every connection (FORCEDTLS). With
   * `clientCa`, clients must also present a certificate that CA signed (otherwise TLS encrypts but
   * anyone who reaches the server may connect).
   */
  tls?: TlsOptions;
  limits?: Partial<ServerLimits>;
  /** Connections beyond this are closed as they arrive. */
  maxConnections?: number;
  /** Connection-level events (violations, I/O errors); default: nothing. */
  log?: (message: string) => void;
}

export interface TlsOptions {
  cert: string | Buffer;
  key: string | Buffer;
  clientCa?: string | Buffer;
}

const DEFAULT_MAX_CONNECTIONS = 32;

/**
 * An NBD server (fixed newstyle) for a set of exports. Connections are independent: each has its own
 * reader, budget and handlers, so a slow or hostile client holds only its own share of memory and never
 * delays the others. Listening beyond loopback needs `allowRemote` and TLS: NBD itself has no
 * authentication, so anyone who can reach the port could read (and, if writable, change) the disk.
 */
export class NbdServer {
  private readonly server: Server;
  private readonly connections = new Set<NbdConnection>();
  private readonly runs = new Set<Promise<void>>();
  private readonly ctx: ConnectionContext;
  private readonly maxConnections: number;
  private listening: ServerAddress | undefined;
  private nextId = 1;

  constructor(private readonly options: NbdServerOptions) {
    const names = new Set<string>();
    for (const e of options.exports) {
      if (names.has(e.name)) throw new DiskchainError('INVALID_ARGUMENT', `two exports are named "${e.name}"`);
      if (Buffer.byteLength(e.name) > 4096) throw new DiskchainError('INVALID_ARGUMENT', 'an export name is limited to 4096 bytes');
      names.add(e.name);
    }
    let tls: ConnectionContext['tls'];
    if (options.tls) {
      try {
        const { cert, key, clientCa } = options.tls;
        tls = { context: createSecureContext({ cert, key, ...(clientCa ? { ca: clientCa } : {}), minVersion: 'TLSv1.2' }), verifyClients: clientCa !== undefined };
      } catch (e) {
        throw new DiskchainError('INVALID_ARGUMENT', `the TLS certificate or key cannot be used: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
    const exports = options.exports;
    const limits = { ...DEFAULT_LIMITS, ...options.limits };
    if (limits.maxBytesInFlight < limits.maxPayload) throw new DiskchainError('INVALID_ARGUMENT', 'a connection\'s budget (maxBytesInFlight) must hold at least one maximum payload');
    this.ctx = {
      findExport: (name) => exports.find((e) => e.name === name) ?? (name === '' && exports.length === 1 ? exports[0] : undefined),
      listExports: () => exports,
      tls,
      limits,
      log: options.log ?? (() => undefined),
    };
    this.maxConnections = options.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
    this.server = createServer({ allowHalfOpen: true, noDelay: true }, (socket) => this.accept(socket));
  }

  get address(): ServerAddress | undefined {
    return this.listening;
  }

  /** Number of open connections. */
  get connectionCount(): number {
    return this.connections.size;
  }

  /** Starts listening; resolves once connections are accepted. */
  async listen(where: ListenOptions): Promise<ServerAddress> {
    const tls = this.ctx.tls !== undefined;
    if ('socket' in where) {
      await this.bind(() => this.server.listen({ path: where.socket }));
      // Owner only: a unix socket is as open as its mode, and NBD has no authentication of its own.
      await chmod(where.socket, 0o600);
      this.listening = { socket: where.socket, tls, uris: this.uris((name) => `nbd+unix:///${encodeURIComponent(name)}?socket=${encodeURIComponent(where.socket)}`) };
    } else {
      const host = where.host ?? '127.0.0.1';
      checkListenAddress(where, tls);
      await this.bind(() => this.server.listen({ host, port: where.port }));
      const port = (this.server.address() as { port: number }).port;
      const shown = isIP(host) === 6 ? `[${host}]` : host;
      this.listening = { host, port, tls, uris: this.uris((name) => `${tls ? 'nbds' : 'nbd'}://${shown}:${port}/${encodeURIComponent(name)}`) };
    }
    return this.listening;
  }

  /** What each open connection holds (see NbdConnection.stats). */
  connectionStats(): Array<ReturnType<NbdConnection['stats']> & { id: string }> {
    return [...this.connections].map((c) => ({ id: c.id, ...c.stats() }));
  }

  /**
   * Stops accepting, lets every connection finish the requests it has in flight and answer them, then
   * closes them; a client that does not take its last replies within `graceMs` is cut off. The exports
   * stay open (their owner closes them).
   */
  async close(graceMs = 5_000): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    const open = [...this.connections];
    for (const c of open) c.stop();
    await Promise.allSettled([...this.runs]);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(open.map((c) => c.gone)), new Promise((r) => (timer = setTimeout(r, graceMs)))]);
    clearTimeout(timer);
    for (const c of open) c.kill();
    await closed;
  }

  private uris(make: (name: string) => string): Record<string, string> {
    return Object.fromEntries(this.options.exports.map((e) => [e.name, make(e.name)]));
  }

  private bind(start: () => void): Promise<void> {
    return new Promise((resolve, reject) => {
      const fail = (e: NodeJS.ErrnoException): void => {
        reject(new DiskchainError('IO', `cannot listen: ${e.message}`, { errno: e.code }, { cause: e }));
      };
      this.server.once('error', fail);
      this.server.once('listening', () => {
        this.server.off('error', fail);
        resolve();
      });
      start();
    });
  }

  private accept(socket: Socket): void {
    if (this.connections.size >= this.maxConnections) {
      this.ctx.log(`refused a connection: ${this.maxConnections} are open`);
      socket.destroy();
      return;
    }
    const id = `connection ${this.nextId++}${socket.remoteAddress ? ` from ${socket.remoteAddress}` : ''}`;
    const conn = new NbdConnection(socket, this.ctx, id);
    this.connections.add(conn);
    void conn.gone.then(() => this.connections.delete(conn));
    const run = conn.run().finally(() => this.runs.delete(run));
    this.runs.add(run);
  }
}

/**
 * Refuses a TCP address other than loopback unless remote listening is allowed explicitly, and then
 * unless TLS is configured: NBD has no authentication, so whoever reaches the port reads the disk.
 */
export function checkListenAddress(where: ListenOptions, tls: boolean): void {
  if ('socket' in where) return;
  const host = where.host ?? '127.0.0.1';
  if (isLoopback(host)) return;
  if (!where.allowRemote) {
    throw new DiskchainError('INVALID_ARGUMENT', `refusing to listen on ${host}: only loopback and unix sockets are served unless remote listening is allowed explicitly (and then TLS is required)`);
  }
  if (!tls) throw new DiskchainError('INVALID_ARGUMENT', `refusing to listen on ${host} without TLS: NBD has no authentication, so give a certificate and key`);
}

/** 127.0.0.0/8, ::1 (also IPv4-mapped) and "localhost". Other names could resolve anywhere. */
export function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  const v4 = host.startsWith('::ffff:') ? host.slice(7) : host;
  if (isIP(v4) === 4) return v4.startsWith('127.');
  return isIP(host) === 6 && /^(0{0,4}:){7}0{0,3}1$|^::1$/.test(host);
}
