/**
 * A checkpoint named on a command line: by id (or an unambiguous id prefix of at least 8
 * characters) or by name. Names may repeat (Hyper-V allows it), so a name that matches several
 * checkpoints is refused with the candidates listed.
 */
import { DiskchainError } from '../io/errors.js';
import type { Checkpoint, Manifest } from './manifest.js';

export function resolveCheckpoint(m: Manifest, ref: string): Checkpoint {
  const wanted = ref.trim().toLowerCase().replace(/^\{|\}$/g, '');
  const byId = m.checkpoints.find((c) => c.id === wanted);
  if (byId) return byId;
  const byName = m.checkpoints.filter((c) => c.name === ref);
  if (byName.length === 1) return byName[0]!;
  if (byName.length > 1) {
    const candidates = byName.map((c) => ({ id: c.id, name: c.name, created: c.created }));
    throw new DiskchainError('AMBIGUOUS', `${byName.length} checkpoints are named "${ref}": ${candidates.map((c) => `${c.id} (${c.created})`).join(', ')}; name one by its id`, { candidates });
  }
  if (wanted.length >= 8) {
    const byPrefix = m.checkpoints.filter((c) => c.id.startsWith(wanted));
    if (byPrefix.length === 1) return byPrefix[0]!;
    if (byPrefix.length > 1) {
      const candidates = byPrefix.map((c) => ({ id: c.id, name: c.name, created: c.created }));
      throw new DiskchainError('AMBIGUOUS', `${byPrefix.length} checkpoint ids start with "${wanted}": ${candidates.map((c) => `${c.id} (${c.name})`).join(', ')}`, { candidates });
    }
  }
  const known = m.checkpoints.map((c) => `"${c.name}" (${c.id})`);
  throw new DiskchainError('CHECKPOINT_NOT_FOUND', `no checkpoint has the id or name "${ref}"${known.length ? `; the VM has ${known.join(', ')}` : '; the VM has no checkpoints'}`, { checkpoint: ref });
}
