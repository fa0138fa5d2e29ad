// Every failure a client sees is `{ error: { code, message, ...details } }` with the engine's code and an
// HTTP status chosen from it; never a stack (an unexpected error is logged on the console's terminal).
import { DiskchainError, isDiskchainError, type ErrorCode } from '../api/index.js';

export interface ErrorBody {
  /** An engine code, or INTERNAL for a bug (whose details stay in the terminal). */
  code: ErrorCode | 'INTERNAL';
  message: string;
  [detail: string]: unknown;
}

const STATUS: Partial<Record<ErrorCode, number>> = {
  INVALID_ARGUMENT: 400,
  OUT_OF_RANGE: 400,
  FORBIDDEN: 403,
  PATH_NOT_ALLOWED: 403,
  NOT_FOUND: 404,
  CHECKPOINT_NOT_FOUND: 404,
  AMBIGUOUS: 409,
  EXISTS: 409,
  VM_BUSY: 409,
  VM_STATE: 409,
  LOCKED: 409,
  HAS_DEPENDENTS: 409,
  JOURNAL_MISMATCH: 409,
  READ_ONLY: 409,
  ABORTED: 409,
  CORRUPT: 422,
  TRUNCATED: 422,
  UNSUPPORTED: 422,
  UNKNOWN_FORMAT: 422,
  PARENT_NOT_FOUND: 422,
  PARENT_MISMATCH: 422,
  CHAIN_CYCLE: 422,
  CHAIN_TOO_DEEP: 422,
  MANIFEST_INVALID: 422,
  NO_SPACE: 507,
};

/** The engine's error for anything thrown: fastify's request errors and errno errors get a code too. */
export function asDiskchainError(e: unknown): DiskchainError | null {
  if (isDiskchainError(e)) return e;
  const err = e as { code?: unknown; statusCode?: unknown; message?: unknown; validation?: unknown; path?: unknown };
  if (typeof err?.message !== 'string') return null;
  // fastify: body or query schema failures, unparsable bodies, bodies too large, unknown content types.
  if (err.validation !== undefined || (typeof err.code === 'string' && err.code.startsWith('FST_ERR_CTP')) || err.code === 'FST_ERR_VALIDATION') {
    return new DiskchainError('INVALID_ARGUMENT', err.message);
  }
  if (typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500) return new DiskchainError('INVALID_ARGUMENT', err.message);
  if (err.code === 'ENOENT') return new DiskchainError('NOT_FOUND', err.message, typeof err.path === 'string' ? { file: err.path } : {});
  if (err.code === 'ENOSPC') return new DiskchainError('NO_SPACE', err.message, typeof err.path === 'string' ? { file: err.path } : {});
  if (typeof err.code === 'string' && /^E[A-Z]+$/.test(err.code)) return new DiskchainError('IO', err.message, { errno: err.code, ...(typeof err.path === 'string' ? { file: err.path } : {}) });
  return null;
}

export function errorBody(e: unknown): { status: number; body: { error: ErrorBody } } {
  const d = asDiskchainError(e);
  if (d) {
    const { name: _name, ...rest } = d.toJSON();
    return { status: STATUS[d.code] ?? 500, body: { error: { ...rest, code: d.code, message: d.message } } };
  }
  process.stderr.write(`diskchain console: internal error: ${(e as Error)?.stack ?? String(e)}\n`);
  return { status: 500, body: { error: { code: 'INTERNAL', message: "internal error (the details are in the console's terminal)" } } };
}
