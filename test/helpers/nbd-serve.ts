/** Serves a chain in-process on a unix socket for the NBD tests, and cleans up after. */
import { join } from 'node:path';
import { openChain, type OpenChainOptions } from '../../src/chain/open-chain.js';
import type { DiskChain } from '../../src/chain/disk-chain.js';
import { ChainBackend, type ExportBackend } from '../../src/server/backend.js';
import type { ServerLimits } from '../../src/server/connection.js';
import { NbdExport } from '../../src/server/export.js';
import { NbdServer } from '../../src/server/server.js';

export interface Served {
  socket: string;
  exp: NbdExport;
  server: NbdServer;
  chain: DiskChain;
  log: string[];
  close(): Promise<void>;
}

let serial = 0;

export async function serveChain(dir: string, leaf: string, options: OpenChainOptions & { limits?: Partial<ServerLimits>; wrapBackend?: (b: ExportBackend) => ExportBackend; name?: string } = {}): Promise<Served> {
  const chain = await openChain(leaf, options);
  const backend = new ChainBackend(chain);
  const exp = new NbdExport(options.wrapBackend ? options.wrapBackend(backend) : backend, { name: options.name ?? 'disk' });
  const log: string[] = [];
  const server = new NbdServer({ exports: [exp], ...(options.limits ? { limits: options.limits } : {}), log: (m) => log.push(m) });
  const socket = join(dir, `nbd-${process.pid}-${++serial}.sock`);
  await server.listen({ socket });
  return {
    socket,
    exp,
    server,
    chain,
    log,
    close: async () => {
      await server.close();
      await exp.close();
    },
  };
}
