// The name a new VM gets (export, import): checked in the request, before a job copies anything.
import { DiskchainError, MAX_NAME_LENGTH } from '../api/index.js';

/** A VM's name, as vm.json takes it (Hyper-V's limit), checked before a job copies anything. */
export function checkVmName(name: string | undefined): string | undefined {
  if (name === undefined) return undefined;
  const trimmed = name.trim();
  if (trimmed === '') throw new DiskchainError('INVALID_ARGUMENT', 'a VM name cannot be empty', { field: 'name' });
  if (trimmed.length > MAX_NAME_LENGTH) throw new DiskchainError('INVALID_ARGUMENT', `a VM name has at most ${MAX_NAME_LENGTH} characters (this one has ${trimmed.length})`, { field: 'name' });
  return trimmed;
}
