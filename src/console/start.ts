// `diskchain console`: starts the server and says where it listens. Loopback unless the caller both
// names another address and allows it (allowRemote), since the console can change every disk under its roots.
import { isIP } from 'node:net';
import type { AddressInfo } from 'node:net';
import { DiskchainError } from '../api/index.js';
import { Jobs } from './jobs.js';
import { Roots } from './roots.js';
import { allowedHosts, isLoopback, newToken } from './security.js';
import { buildServer } from './server.js';

export interface ConsoleOptions {
  roots: string[];
  /** 0: a free port chosen by the system. */
  port?: number;
  bind?: string;
  /** Required for a bind address that is not loopback. */
  allowRemote?: boolean;
  version?: string;
}

export interface RunningConsole {
  /** The URL to open, with the token. */
  url: string;
  token: string;
  port: number;
  jobs: Jobs;
  /** What a non-loopback bind exposes (null on loopback): print it. */
  warning: string | null;
  /** Cancels running jobs (they stop at a safe point), then stops listening. */
  close: () => Promise<void>;
}

function exposureWarning(bind: string, port: number, roots: string[]): string {
  return [
    `WARNING: the console listens on ${bind}:${port}, not only on this machine.`,
    `Anyone who can reach that address and has the URL's token can read, change, merge and delete every`,
    `disk and VM under ${roots.join(', ')}. Traffic is plain HTTP: the token and the data travel unencrypted.`,
    `Prefer the default (127.0.0.1) with an SSH tunnel: ssh -L ${port}:127.0.0.1:${port} this-host`,
  ].join('\n');
}

export async function startConsole(options: ConsoleOptions): Promise<RunningConsole> {
  const bind = options.bind ?? '127.0.0.1';
  if (isIP(bind) === 0 && bind !== 'localhost') throw new DiskchainError('INVALID_ARGUMENT', `--bind takes an IP address, not ${bind}`);
  if (!isLoopback(bind) && !options.allowRemote) {
    throw new DiskchainError('INVALID_ARGUMENT', `--bind ${bind} would expose the console beyond this machine; add --allow-remote if that is what you want`);
  }
  const port = options.port ?? 0;
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new DiskchainError('INVALID_ARGUMENT', `--port must be 0..65535, not ${port}`);
  const roots = await Roots.open(options.roots);
  const jobs = new Jobs();
  const token = newToken();
  // The port is known once listening; the guard reads it from the context.
  const ctx = { roots, jobs, token, port, hosts: new Set<string>(), version: options.version ?? '0.1.0' };
  const app = await buildServer(ctx);
  await app.listen({ host: bind, port }).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'EADDRINUSE') throw new DiskchainError('IO', `port ${port} is in use on ${bind}: choose another with --port (0 picks a free one)`, { errno: e.code });
    throw e;
  });
  ctx.port = (app.server.address() as AddressInfo).port;
  for (const h of allowedHosts(bind, ctx.port)) ctx.hosts.add(h);
  const shown = isLoopback(bind) || bind === '0.0.0.0' || bind === '::' ? '127.0.0.1' : isIP(bind) === 6 ? `[${bind}]` : bind;
  return {
    url: `http://${shown}:${ctx.port}/?token=${token}`,
    token,
    port: ctx.port,
    jobs,
    warning: isLoopback(bind) ? null : exposureWarning(bind, ctx.port, roots.paths),
    close: async () => {
      await jobs.shutdown();
      await app.close();
    },
  };
}
