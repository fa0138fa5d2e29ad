/** Runs `diskchain serve` as a child process, as users do, and stops it as they do (SIGTERM / SIGINT). */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { CLI } from './cli.js';

export { CLI };

export interface ServedProcess {
  proc: ChildProcess;
  /** The JSON line the server printed once listening. */
  info: { socket?: string; host?: string; port?: number; tls: boolean; writable: boolean; size: number; uris: Record<string, string> };
  /** The URI of the (only) export. */
  uri: string;
  stderr: () => string;
  /** Sends `signal` and resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Starts `diskchain serve <args> --json` and waits for its line; rejects with stderr if it exits first. */
export function serveCli(args: string[], cwd?: string): Promise<ServedProcess> {
  const proc = spawn('node', [CLI, 'serve', ...args, '--json'], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: proc.stdout! });
    lines.once('line', (line) => {
      const info = JSON.parse(line) as ServedProcess['info'];
      resolve({
        proc,
        info,
        uri: Object.values(info.uris)[0]!,
        stderr: () => err,
        stop: (signal = 'SIGTERM') => {
          proc.kill(signal);
          return exited;
        },
      });
    });
    void exited.then((code) => reject(new Error(`diskchain serve exited with ${code} before listening: ${err}`)));
  });
}
