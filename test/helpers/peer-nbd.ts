/**
 * Reference NBD servers on a unix socket, to serve the test guest its disks: qemu-nbd (qemu-utils)
 * and nbdkit (its file plugin, optionally behind the error filter to inject ENOSPC on writes while a
 * trigger file exists). Each dies with the test process (nbdkit --exit-with-parent; qemu-nbd is
 * killed by stop()).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

export interface PeerNbdServer {
  socket: string;
  process: ChildProcess;
  stop(): Promise<void>;
}

export interface PeerNbdOptions {
  socket: string;
  file: string;
  /** nbdkit only: while this file exists, every write fails with ENOSPC (nbdkit-error-filter). */
  enospcWhileExists?: string;
}

export function startNbdkit(options: PeerNbdOptions): Promise<PeerNbdServer> {
  const args = ['--foreground', '--exit-with-parent', '--unix', options.socket];
  if (options.enospcWhileExists) args.push('--filter=error');
  args.push('file', options.file);
  if (options.enospcWhileExists) args.push('error-pwrite=ENOSPC', 'error-pwrite-rate=100%', `error-pwrite-file=${options.enospcWhileExists}`);
  return launch('nbdkit', args, options.socket);
}

export function startQemuNbd(options: PeerNbdOptions): Promise<PeerNbdServer> {
  return launch('qemu-nbd', ['--persistent', '--format=raw', '--socket', options.socket, options.file], options.socket);
}

async function launch(binary: string, args: string[], socket: string): Promise<PeerNbdServer> {
  const child = spawn(binary, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
  };
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${binary} exited: ${stderr}`);
    if (await accepts(socket)) return { socket, process: child, stop };
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`${binary} did not listen on ${socket}: ${stderr}`);
    }
    await sleep(20);
  }
}

function accepts(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ path });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}
