/** Stable error codes. A code never changes meaning once released. */
export type ErrorCode =
  | 'CORRUPT' // structure is damaged or inconsistent
  | 'TRUNCATED' // a read ran past the end of the file
  | 'UNSUPPORTED' // valid but not something we handle (unknown required item, version)
  | 'UNKNOWN_FORMAT' // content matches no driver
  | 'INVALID_ARGUMENT' // the caller asked for something impossible
  | 'READ_ONLY' // write attempted on a read-only open
  | 'OUT_OF_RANGE' // offset/length outside the virtual disk
  | 'PARENT_NOT_FOUND' // no parent at any path tried
  | 'PARENT_MISMATCH' // parent found but its identity does not match
  | 'CHAIN_CYCLE' // a disk appears twice in its own chain
  | 'CHAIN_TOO_DEEP'
  | 'PATH_NOT_ALLOWED' // a parent path escapes the allowed folders
  | 'NO_SPACE' // the target file system is full or would be
  | 'HAS_DEPENDENTS' // another disk depends on a file an operation would change or remove
  | 'JOURNAL_MISMATCH' // an operation journal describes a chain that has changed since
  | 'ABORTED'
  | 'QEMU_FAILED' // QEMU did not start, or exited when it should not have (exit status, stderr in details)
  | 'QMP_ERROR' // QEMU or its guest agent answered a command with an error (its class and desc in details)
  | 'QMP_CLOSED' // the QMP or guest-agent connection closed (QEMU exited, or the socket was lost)
  | 'TIMEOUT' // no answer within the time allowed
  | 'IO' // the operating system refused an operation
  | 'LOCKED' // another process (diskchain or QEMU) or a pending merge holds a file; details: holder, heldBy
  | 'VM_BUSY' // another operation holds the VM's lock (details.holder)
  | 'VM_STATE' // the operation does not fit the VM's state: it is running, off, saved, paused (details.state)
  | 'NOT_FOUND' // no VM folder (or disk of a VM) by that name; a console request names no route, job or item that exists
  | 'CHECKPOINT_NOT_FOUND' // no checkpoint with that id or name
  | 'AMBIGUOUS' // a name matches several checkpoints (details.candidates)
  | 'MANIFEST_INVALID' // vm.json (or a record beside it) is damaged, hand-edited wrongly, or disagrees with the files (details.path: the JSON path)
  | 'EXISTS' // the target (a VM folder, an export) already exists
  | 'FORBIDDEN'; // a console request without the session's token, or from another site or host name

export interface ErrorDetails {
  file?: string;
  offset?: number;
  [key: string]: unknown;
}

/** The one error class of diskchain: a stable code plus structured details. */
export class DiskchainError extends Error {
  readonly code: ErrorCode;
  readonly details: ErrorDetails;

  constructor(code: ErrorCode, message: string, details: ErrorDetails = {}, options?: { cause?: unknown }) {
    super(formatMessage(message, details), options);
    this.name = 'DiskchainError';
    this.code = code;
    this.details = details;
  }

  toJSON(): Record<string, unknown> {
    return { name: this.name, code: this.code, message: this.message, ...this.details };
  }
}

function formatMessage(message: string, details: ErrorDetails): string {
  const where: string[] = [];
  if (details.file !== undefined) where.push(details.file);
  if (details.offset !== undefined) where.push(`offset ${details.offset} (0x${details.offset.toString(16)})`);
  return where.length > 0 ? `${message} [${where.join(' at ')}]` : message;
}

export function isDiskchainError(e: unknown): e is DiskchainError {
  return e instanceof DiskchainError;
}

/** Convenience for the most common case: the file is damaged at a known place. */
export function corrupt(message: string, file: string, offset?: number, extra: Record<string, unknown> = {}): DiskchainError {
  return new DiskchainError('CORRUPT', message, { file, ...(offset !== undefined ? { offset } : {}), ...extra });
}

/** Throws (as an AbortError with code ABORTED) when the signal has fired. */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new DiskchainError('ABORTED', 'operation cancelled');
}
