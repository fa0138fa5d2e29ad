import { isDiskchainError } from '../io/errors.js';
import { NBD_EINVAL, NBD_EIO, NBD_ENOSPC, NBD_EPERM, NBD_ESHUTDOWN } from './protocol.js';

/**
 * The NBD error a failed request is answered with, and the message the client's user sees (the error's
 * code, never the server's file paths). A full file system is NBD_ENOSPC, which QEMU answers by pausing
 * the VM (werror=enospc) instead of failing the guest's write; every other I/O failure is NBD_EIO.
 */
export function nbdErrorFor(e: unknown): [number, string] {
  if (isDiskchainError(e)) {
    switch (e.code) {
      case 'NO_SPACE':
        return [NBD_ENOSPC, 'no space left on the server'];
      case 'READ_ONLY':
        return [NBD_EPERM, 'the export is read-only'];
      case 'OUT_OF_RANGE':
      case 'INVALID_ARGUMENT':
        return [NBD_EINVAL, `invalid request (${e.code})`];
      case 'ABORTED':
        return [NBD_ESHUTDOWN, 'the server is shutting down'];
      default:
        return [NBD_EIO, `input/output error on the server (${e.code})`];
    }
  }
  const errno = (e as NodeJS.ErrnoException | undefined)?.code;
  if (errno === 'ENOSPC' || errno === 'EDQUOT' || errno === 'EFBIG') return [NBD_ENOSPC, 'no space left on the server'];
  return [NBD_EIO, 'input/output error on the server'];
}
