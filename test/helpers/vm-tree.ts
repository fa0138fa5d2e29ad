// A VM with a branched checkpoint tree, built through the library as a user's CLI session would, and
// its plain model (vm-model.ts) to hold the folder to after the console changes it:
//
//   Base install ── Updates ─┬─ Web server
//                            └─ Database ── Tuning ── Now
import { createVm, withVm } from '../../src/api/vm.js';
import { VmModel } from './vm-model.js';
import { MIB, randomBytesFrom } from './vhdx-util.js';

export const TREE_DISK_SIZE = 64 * MIB;

/** Writes `length` bytes (seeded) into Now's disk0 at `offset`, in the VM and in the model. */
async function write(folder: string, model: VmModel, seed: number, offset: number, length: number): Promise<void> {
  const data = randomBytesFrom(seed, length);
  await withVm(folder, {}, async (vm) => {
    const chain = await vm.openDisk('disk0', { writable: true });
    try {
      await chain.write(data, offset);
    } finally {
      await chain.close();
    }
  });
  model.write(0, offset, data);
}

async function checkpoint(folder: string, model: VmModel, name: string): Promise<string> {
  const c = await withVm(folder, {}, (vm) => vm.checkpoint({ name }));
  model.create(c.id, name);
  return c.id;
}

/** `mergeMiB`: how much Tuning's layer holds (what removing Database merges). */
export async function buildBranchedVm(folder: string, name: string, mergeMiB = 8): Promise<{ model: VmModel; ids: Record<string, string> }> {
  await createVm(folder, { name, newDisks: [{ size: TREE_DISK_SIZE }] });
  const model = new VmModel([TREE_DISK_SIZE]);
  const ids: Record<string, string> = {};
  await write(folder, model, 1, 0, 4 * MIB);
  ids['Base install'] = await checkpoint(folder, model, 'Base install');
  await write(folder, model, 2, 8 * MIB, 2 * MIB);
  ids.Updates = await checkpoint(folder, model, 'Updates');
  await write(folder, model, 3, 12 * MIB, 2 * MIB);
  ids['Web server'] = await checkpoint(folder, model, 'Web server');
  await withVm(folder, {}, (vm) => vm.apply(ids.Updates!, { checkpointFirst: false }));
  model.apply(ids.Updates!);
  await write(folder, model, 4, 16 * MIB, 2 * MIB);
  ids.Database = await checkpoint(folder, model, 'Database');
  await write(folder, model, 5, 24 * MIB, mergeMiB * MIB);
  ids.Tuning = await checkpoint(folder, model, 'Tuning');
  await write(folder, model, 6, 60 * MIB, 1 * MIB);
  return { model, ids };
}
