/**
 * A VM's memory and device state to and from a file, through QEMU's migration stream
 * (qapi/migration.json). QEMU 7.2 has no `file:` URI (8.2 adds it), so the stream goes through
 * `exec:`: QEMU runs the command with /bin/sh, writes to its stdin (save) or reads its stdout
 * (restore), and on completion closes the pipe and waits for the command to exit (io/channel-command.c),
 * so the file is whole when query-migrate says "completed". We fsync it and its folder before saying so.
 *
 * Save: best with the VM stopped (a standard checkpoint: `stop` drains the guest's disk writes
 * first); a running VM is migrated live and ends stopped. Either way QEMU is left in "postmigrate":
 * `cont` resumes the guest (its disks are reactivated), `quit` ends it.
 * Restore: QEMU started with -incoming defer (and the same devices); `migrate-incoming` loads the
 * stream; the VM lands in the run state it was saved in (paused after a stop) and `cont` resumes it.
 * A stream QEMU cannot load makes QEMU exit.
 */
import { stat } from 'node:fs/promises';
import { syncWrittenFile } from '../io/durable.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { DiskchainError } from '../io/errors.js';
import type { MigrationInfo } from './qmp-schema.js';
import type { QmpClient } from './qmp.js';

export interface StateFileOptions {
  /** Bounds the whole save or restore (default 10 minutes). */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface SaveStateResult {
  /** The size of the state file. */
  bytes: number;
  /** From the migrate command to the file being durable. */
  ms: number;
  /** What query-migrate reported at the end. */
  info: MigrationInfo;
}

/** query-migrate / query-status are polled this often. */
const POLL_MS = 20;
/** The migration stream's rate limit while saving: a state file is local, so as fast as QEMU goes. */
const SAVE_BANDWIDTH = 64 * 1024 * 1024 * 1024;

/** Writes the VM's memory and device state to `file` (replaced if it exists) and flushes it. */
export async function saveState(qmp: QmpClient, file: string, options: StateFileOptions = {}): Promise<SaveStateResult> {
  const started = performance.now();
  const deadline = Date.now() + (options.timeoutMs ?? 600_000);
  await qmp.execute('migrate-set-parameters', { 'max-bandwidth': SAVE_BANDWIDTH });
  await qmp.execute('migrate', { uri: `exec:cat > ${shellQuote(file)}` });
  let info: MigrationInfo;
  for (;;) {
    info = await qmp.execute('query-migrate');
    if (info.status === 'completed') break;
    if (info.status === 'failed' || info.status === 'cancelled') {
      throw new DiskchainError('QMP_ERROR', `saving the VM state failed: ${info['error-desc'] ?? info.status}`, { file, status: info.status });
    }
    if (options.signal?.aborted || Date.now() > deadline) {
      await qmp.executeUntyped('migrate_cancel').catch(() => undefined);
      if (options.signal?.aborted) throw new DiskchainError('ABORTED', 'saving the VM state cancelled', { file });
      throw new DiskchainError('TIMEOUT', 'saving the VM state took too long', { file });
    }
    await sleep(POLL_MS);
  }
  // The file was new (cat > file): its data, then its name in the folder (a standard checkpoint's
  // commit names it in vm.json, which lives in another folder).
  await syncWrittenFile(file);
  const bytes = (await stat(file)).size;
  return { bytes, ms: performance.now() - started, info };
}

/**
 * Loads a state file into a QEMU started with `incoming: 'defer'`. Resolves once loaded, with the
 * run state it landed in (normally "paused": `cont` resumes the guest).
 */
export async function loadState(qmp: QmpClient, file: string, options: StateFileOptions = {}): Promise<{ ms: number; status: string }> {
  const started = performance.now();
  const deadline = Date.now() + (options.timeoutMs ?? 600_000);
  await stat(file); // a missing file fails here, with the path, rather than inside QEMU's shell
  await qmp.execute('migrate-incoming', { uri: `exec:cat ${shellQuote(file)}` });
  for (;;) {
    const { status } = await qmp.execute('query-status');
    if (status !== 'inmigrate') return { ms: performance.now() - started, status };
    if (options.signal?.aborted) throw new DiskchainError('ABORTED', 'restoring the VM state cancelled', { file });
    if (Date.now() > deadline) throw new DiskchainError('TIMEOUT', 'restoring the VM state took too long', { file });
    await sleep(POLL_MS);
  }
}

/** One argument for /bin/sh: single-quoted, with each ' written as '\''. */
export function shellQuote(value: string): string {
  if (/[\0\n]/.test(value)) throw new DiskchainError('INVALID_ARGUMENT', 'a state file path contains a NUL or newline', { file: value });
  return `'${value.replaceAll("'", "'\\''")}'`;
}
