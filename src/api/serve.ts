import { basename } from 'node:path';
import type { DiskChain } from '../chain/disk-chain.js';
import { openChain, type OpenChainOptions } from '../chain/open-chain.js';
import { DiskchainError } from '../io/errors.js';
import { refuseIfDependedOn } from '../ops/dependents.js';
import { ChainBackend } from '../server/backend.js';
import type { ServerLimits } from '../server/connection.js';
import { NbdExport } from '../server/export.js';
import { checkListenAddress, NbdServer, type ListenOptions, type ServerAddress, type TlsOptions } from '../server/server.js';
import { ServedLocks } from './serve-locks.js';

export interface ServeOptions extends Pick<OpenChainOptions, 'searchPaths' | 'ignoreIdMismatch' | 'format'> {
  /** Listen on this unix socket (default: TCP on 127.0.0.1). */
  socket?: string;
  /** TCP port (default 10809, the port IANA reserved for NBD; 0 picks a free one). */
  port?: number;
  /** TCP address (default 127.0.0.1). Anything but loopback needs `allowRemote` and `tls`. */
  host?: string;
  allowRemote?: boolean;
  /** PEM certificate and key (and a CA clients' certificates must be signed by): clients must then start TLS (NBD_OPT_STARTTLS). */
  tls?: TlsOptions;
  /** Serve the leaf writable (default read-only). Refused when another disk depends on the leaf. */
  writable?: boolean;
  /** The export's name (default: the disk's file name; the empty name also reaches it). */
  exportName?: string;
  limits?: Partial<ServerLimits>;
  maxConnections?: number;
  log?: (message: string) => void;
}

export interface ServeHandle {
  address: ServerAddress;
  exports: NbdExport[];
  /** Stops serving: waits for the requests in flight, flushes, closes the disks and drops the locks. */
  close(): Promise<void>;
}

export const NBD_PORT = 10809;

/** Where to listen, checked before anything is opened. */
export function listenTarget(options: Pick<ServeOptions, 'socket' | 'port' | 'host' | 'allowRemote' | 'tls'>): ListenOptions {
  if (options.socket !== undefined && (options.port !== undefined || options.host !== undefined)) {
    throw new DiskchainError('INVALID_ARGUMENT', 'listen on a unix socket or on a TCP port, not both');
  }
  const where: ListenOptions = options.socket !== undefined
    ? { socket: options.socket }
    : { host: options.host ?? '127.0.0.1', port: options.port ?? NBD_PORT, allowRemote: options.allowRemote ?? false };
  checkListenAddress(where, options.tls !== undefined);
  return where;
}

/**
 * Serves a disk, read through its whole chain, over NBD. Read-only unless `writable`, and writable only
 * when no other disk in its folder depends on it (a checkpoint's parent must not change). The chain's
 * files stay locked while served: the leaf for writing when writable, everything else for reading
 * (see serve-locks.ts). Resolves once the server accepts connections.
 */
export async function serve(disk: string, options: ServeOptions = {}): Promise<ServeHandle> {
  const where = listenTarget(options);
  const writable = options.writable ?? false;
  if (writable) await refuseIfDependedOn(disk);
  const locks = new ServedLocks();
  await locks.take(disk, writable ? 'write' : 'read');
  let chain: DiskChain | undefined;
  let exp: NbdExport | undefined;
  try {
    chain = await openChain(disk, {
      writable,
      ...(options.format ? { format: options.format } : {}),
      ...(options.searchPaths ? { searchPaths: options.searchPaths } : {}),
      ...(options.ignoreIdMismatch ? { ignoreIdMismatch: true } : {}),
    });
    for (const parent of chain.layers.slice(1)) await locks.take(parent.path, 'read');
    exp = new NbdExport(new ChainBackend(chain), { name: options.exportName ?? basename(disk), description: `${chain.layers.length}-layer ${chain.leaf.format} chain` });
    const server = new NbdServer({
      exports: [exp],
      ...(options.tls ? { tls: options.tls } : {}),
      ...(options.limits ? { limits: options.limits } : {}),
      ...(options.maxConnections !== undefined ? { maxConnections: options.maxConnections } : {}),
      ...(options.log ? { log: options.log } : {}),
    });
    const address = await server.listen(where);
    const served = exp;
    let closing: Promise<void> | undefined;
    return {
      address,
      exports: [served],
      close: () =>
        (closing ??= (async () => {
          try {
            await server.close();
            await served.close();
          } finally {
            await locks.release();
          }
        })()),
    };
  } catch (e) {
    await (exp ? exp.close() : chain?.close())?.catch(() => undefined);
    await locks.release().catch(() => undefined);
    throw e;
  }
}
