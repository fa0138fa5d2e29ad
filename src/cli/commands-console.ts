import type { Command } from 'commander';
import { DiskchainError } from '../io/errors.js';
import { EXIT, type Run } from './output.js';
import { untilStopSignal } from './stop-signal.js';

export function registerConsoleCommands(program: Command, run: Run): void {
  program
    .command('console')
    .description('serve the web console over the VM folders and disk folders under the roots; prints its URL (with a per-start token) once it listens; Ctrl-C stops it, cancelling running jobs at a safe point')
    .option('--root <dir>', 'a folder the console may show and change (repeatable; default: the current folder)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--port <n>', 'TCP port (0: any free port)', '0')
    .option('--bind <address>', 'address to listen on', '127.0.0.1')
    .option('--allow-remote', 'allow a --bind address that is not loopback (the console can change every disk under its roots)')
    .action((opts: { root: string[]; port: string; bind: string; allowRemote?: boolean }) =>
      run(async () => {
        if (!/^\d+$/.test(opts.port)) throw new DiskchainError('INVALID_ARGUMENT', `--port must be a whole number, not ${opts.port}`);
        // Loaded only for this command: the other commands do not pay for the HTTP server at start-up.
        const { startConsole } = await import('../console/start.js');
        const roots = opts.root.length > 0 ? opts.root : [process.cwd()];
        const server = await startConsole({ roots, port: Number(opts.port), bind: opts.bind, allowRemote: opts.allowRemote ?? false, version: program.version() ?? '0.1.0' }).catch(
          (e: unknown) => {
            throw sameClass(e);
          },
        );
        if (server.warning) process.stderr.write(server.warning + '\n');
        const stopped = untilStopSignal();
        process.stdout.write(`diskchain console: ${server.url}\n`);
        await stopped;
        process.stderr.write('diskchain console: stopping (running jobs stop at a safe point)\n');
        await server.close();
        return EXIT.ok;
      }, false),
    );
}

/** The console's modules are loaded beside the bundled CLI, with their own DiskchainError class. */
function sameClass(e: unknown): unknown {
  const err = e as { name?: unknown; code?: unknown; message?: unknown; details?: unknown };
  if (err?.name !== 'DiskchainError' || typeof err.code !== 'string') return e;
  return new DiskchainError(err.code as DiskchainError['code'], String(err.message), (err.details ?? {}) as DiskchainError['details']);
}
