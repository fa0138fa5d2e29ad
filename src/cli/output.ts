import cliProgress from 'cli-progress';
import { isDiskchainError, type ErrorCode } from '../io/errors.js';
import type { ProgressCallback } from '../ops/progress.js';

/** Exit codes, stable and documented in --help. */
/** Runs a command's action: its result is the exit code; an error is reported and mapped to one. */
export type Run = (action: () => Promise<number>, json: boolean) => Promise<void>;

export const EXIT = {
  ok: 0,
  findings: 1, // check found problems
  usage: 2,
  badInput: 3, // corrupt, truncated, unsupported or unknown format
  chain: 4, // parent missing, mismatched, cycle; a file locked by another process or a pending merge
  io: 5, // operating system error, no space
  notFound: 6, // no such VM or checkpoint, an ambiguous name, a target that exists
  aborted: 130,
} as const;

export const EXIT_CODES_HELP = `
Exit codes:
  0    success (check: no errors or warnings)
  1    check found errors or warnings
  2    usage error (bad option or argument)
  3    the input is corrupt, truncated, unsupported or not a disk image, or a VM's vm.json
       is damaged or disagrees with its files (MANIFEST_INVALID)
  4    the chain is broken, or the operation would break it: parent not found, identity
       mismatch, cycle, too deep, path outside the allowed folders, another disk depends on
       a file the operation changes, a merge journal that no longer fits the chain;
       or a file is locked: another diskchain or a QEMU uses it (the message names the
       process), or a pending merge reserves it (the message says what to run); or
       another operation holds the VM (VM_BUSY), or the VM is not in a state the
       operation can run in: running, off, saved, paused (VM_STATE)
  5    I/O error or no space left
  6    no such VM or checkpoint, or a checkpoint name that matches several (NOT_FOUND,
       CHECKPOINT_NOT_FOUND, AMBIGUOUS), or the target already exists (EXISTS)
  130  cancelled (Ctrl-C)`;

function exitCodeFor(code: ErrorCode): number {
  switch (code) {
    case 'INVALID_ARGUMENT':
    case 'OUT_OF_RANGE':
    case 'READ_ONLY':
      return EXIT.usage;
    case 'PARENT_NOT_FOUND':
    case 'PARENT_MISMATCH':
    case 'CHAIN_CYCLE':
    case 'CHAIN_TOO_DEEP':
    case 'PATH_NOT_ALLOWED':
    case 'HAS_DEPENDENTS':
    case 'JOURNAL_MISMATCH':
    case 'LOCKED':
    case 'VM_BUSY':
    case 'VM_STATE':
      return EXIT.chain;
    case 'IO':
    case 'NO_SPACE':
      return EXIT.io;
    case 'NOT_FOUND':
    case 'CHECKPOINT_NOT_FOUND':
    case 'AMBIGUOUS':
    case 'EXISTS':
      return EXIT.notFound;
    case 'ABORTED':
      return EXIT.aborted;
    default:
      return EXIT.badInput;
  }
}

/** Prints an error (as JSON with --json) and returns the exit code. */
export function reportError(e: unknown, json: boolean): number {
  if (isDiskchainError(e)) {
    if (json) process.stdout.write(JSON.stringify({ error: e.toJSON() }, null, 2) + '\n');
    else process.stderr.write(`diskchain: ${e.code}: ${e.message}\n`);
    return exitCodeFor(e.code);
  }
  const err = e as NodeJS.ErrnoException;
  if (err?.code === 'ENOENT' || err?.code === 'EEXIST' || err?.code === 'EACCES') {
    process.stderr.write(`diskchain: ${err.message}\n`);
    return EXIT.io;
  }
  process.stderr.write(`diskchain: internal error: ${err?.stack ?? String(e)}\n`);
  return 70;
}

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v), 2) + '\n');
}

/** A progress bar on stderr when it is a terminal; nothing otherwise. */
export function progressBar(label: string): { onProgress: ProgressCallback; stop: () => void } {
  if (!process.stderr.isTTY) return { onProgress: () => undefined, stop: () => undefined };
  const bar = new cliProgress.SingleBar(
    { format: `${label} [{bar}] {percentage}% | {doneMiB}/{totalMiB} MiB | ETA {eta_formatted}`, stream: process.stderr, hideCursor: true },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  return {
    onProgress: (done, total) => {
      const payload = { doneMiB: (done / 2 ** 20).toFixed(0), totalMiB: (total / 2 ** 20).toFixed(0) };
      if (!started) {
        bar.start(total, done, payload);
        started = true;
      } else bar.update(done, payload);
    },
    stop: () => {
      if (started) bar.stop();
    },
  };
}

/** An AbortSignal fired by Ctrl-C, so long operations stop cleanly. */
export function interruptSignal(): AbortSignal {
  const controller = new AbortController();
  process.once('SIGINT', () => controller.abort());
  return controller.signal;
}
