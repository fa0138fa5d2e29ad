/**
 * Rename-VMSnapshot: a new name (non-empty, at most 100 characters; names may repeat, the id
 * identifies a checkpoint).
 *
 *   plan (pure) → record → commit (vm.json with the new name) → finish (the record dropped)
 */
import type { VmFolder } from './folder.js';
import { checkName } from './create.js';
import type { Checkpoint } from './manifest.js';
import { runPlan } from './transaction.js';

export async function renameCheckpoint(vm: VmFolder, c: Checkpoint, name: string, command = 'checkpoint rename'): Promise<{ id: string; previous: string; name: string }> {
  checkName(name);
  const manifest = { ...vm.manifest, checkpoints: vm.manifest.checkpoints.map((x) => (x.id === c.id ? { ...x, name } : x)) };
  await runPlan(vm, { operation: 'rename', manifest, actions: [], removes: [] }, { command });
  return { id: c.id, previous: c.name, name };
}
