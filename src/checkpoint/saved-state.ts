/**
 * A VM's saved state (Hyper-V's "Saved"): Now's memory and device state, written by `vm save` or
 * left by applying a standard checkpoint to a VM that is not running, and resumed by the next
 * `vm start` (QEMU's -incoming).
 *
 *   <vm>/Saved/state.vmstate   QEMU's migration stream
 *   <vm>/Saved/saved.json      what it belongs to: vm.json's generation and Now's leaves, the machine type
 *
 * saved.json is written (atomically) only once the state file is durable, and removed before the
 * guest resumes: a state is used only when whole, and never twice (a guest resumed twice from one
 * state would write its disks from an old memory). A saved.json whose generation or Now's leaves
 * differ from vm.json's (the tree changed since) is stale and never loaded.
 */
import { mkdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import * as v from 'valibot';
import { linkFile, removeFile, renameFile, syncFolder, writeFileAtomic } from '../io/durable.js';
import { DiskchainError } from '../io/errors.js';
import type { VmFolder } from './folder.js';
import { parseWith, type Checkpoint, type Manifest } from './manifest.js';

export const SAVED_DIR = 'Saved';
export const SAVED_STATE_FILE = `${SAVED_DIR}/state.vmstate`;
const RECORD_FILE = `${SAVED_DIR}/saved.json`;

const SavedRecordSchema = v.strictObject({
  kind: v.literal('diskchain.saved-state'),
  version: v.literal(1),
  created: v.string(),
  /** vm.json's generation when the state was saved. */
  generation: v.pipe(v.number(), v.safeInteger(), v.minValue(1)),
  /** Now's leaf of each disk then. */
  now: v.record(v.string(), v.string()),
  /** QEMU's versioned machine type (a state loads only on the same one). */
  machine: v.pipe(v.string(), v.regex(/^[A-Za-z0-9._-]{1,64}$/)),
  bytes: v.pipe(v.number(), v.safeInteger(), v.minValue(0)),
  /** The checkpoint it came from, when a standard checkpoint was applied to a VM that was not running. */
  checkpoint: v.nullable(v.string()),
});
export type SavedRecord = v.InferOutput<typeof SavedRecordSchema>;

export type SavedStateStatus = { status: 'none' } | { status: 'valid'; record: SavedRecord; file: string } | { status: 'stale'; reason: string };

/** The VM's saved state and whether it still belongs to the tree in `m`. */
export async function readSavedState(realFolder: string, m: Manifest): Promise<SavedStateStatus> {
  const recordPath = join(realFolder, ...RECORD_FILE.split('/'));
  let text: string;
  try {
    if ((await stat(recordPath)).size > 1024 * 1024) return { status: 'stale', reason: 'saved.json is larger than any diskchain writes' };
    text = await readFile(recordPath, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { status: 'none' };
    throw e;
  }
  let record: SavedRecord;
  try {
    record = parseWith(SavedRecordSchema, JSON.parse(text), recordPath);
  } catch (e) {
    return { status: 'stale', reason: `saved.json is damaged: ${e instanceof Error ? e.message : String(e)}` };
  }
  if (record.generation !== m.generation) return { status: 'stale', reason: `the checkpoint tree changed since the state was saved (generation ${record.generation}, now ${m.generation})` };
  for (const d of m.disks) if (record.now[d.id] !== m.now.disks[d.id]) return { status: 'stale', reason: `disk ${d.id} is not at the layer it was saved with` };
  const file = join(realFolder, ...SAVED_STATE_FILE.split('/'));
  const size = await stat(file).then((s) => s.size, () => -1);
  if (size !== record.bytes) return { status: 'stale', reason: `the state file is ${size < 0 ? 'missing' : `${size} bytes, not ${record.bytes}`}` };
  return { status: 'valid', record, file };
}

/**
 * Where a state is written before it is recorded (a partial one is simply replaced next time). The
 * old name is removed first: it may be a link to a checkpoint's state, which must never be written.
 */
export async function savedStateTarget(vm: VmFolder): Promise<string> {
  await mkdir(vm.path(SAVED_DIR), { recursive: true });
  await removeFile(vm.path(SAVED_STATE_FILE));
  return vm.path(SAVED_STATE_FILE);
}

/**
 * vm save's files: the state written into Saved/ by `write` (QEMU's migration stream; it must leave
 * the file durable, name included: vm/state-file.ts), then recorded.
 */
export async function saveNowState(vm: VmFolder, machine: string, write: (file: string) => Promise<unknown>): Promise<SavedRecord> {
  await write(await savedStateTarget(vm));
  return recordSavedState(vm, machine);
}

/** Records the (durable) state file as Now's saved state. */
export async function recordSavedState(vm: VmFolder, machine: string, checkpoint: string | null = null): Promise<SavedRecord> {
  const m = vm.manifest;
  const record: SavedRecord = {
    kind: 'diskchain.saved-state',
    version: 1,
    created: new Date().toISOString(),
    generation: m.generation,
    now: { ...m.now.disks },
    machine,
    bytes: (await stat(vm.path(SAVED_STATE_FILE))).size,
    checkpoint,
  };
  await writeFileAtomic(vm.path(RECORD_FILE), `${JSON.stringify(record, null, 2)}\n`);
  return record;
}

/**
 * After a checkpoint of a Saved VM committed (its finish, run again by recovery): Now's saved state,
 * recorded for the tree at `baseGeneration`, now belongs to the new tree, whose Now leaves are the
 * checkpoint's empty children (the same content). Does nothing when the record is already carried or
 * belongs to neither tree.
 */
export async function carrySavedState(vm: VmFolder, baseGeneration: number): Promise<void> {
  const path = vm.path(RECORD_FILE);
  let record: SavedRecord;
  try {
    record = parseWith(SavedRecordSchema, JSON.parse(await readFile(path, 'utf8')), path);
  } catch {
    return;
  }
  const m = vm.manifest;
  // It fitted the tree the checkpoint froze: that generation, and Now's leaves then (the parents of Now's leaves now).
  if (record.generation !== baseGeneration) return;
  for (const d of m.disks) if (m.nodes.find((n) => n.id === m.now.disks[d.id])?.parent !== record.now[d.id]) return;
  await writeFileAtomic(path, `${JSON.stringify({ ...record, generation: m.generation, now: { ...m.now.disks } }, null, 2)}\n`);
}

/** Forgets the saved state: the record first (durably), then the state file. */
export async function discardSavedState(vm: VmFolder): Promise<void> {
  await removeFile(vm.path(RECORD_FILE));
  await syncFolder(vm.path(SAVED_DIR)).catch(() => undefined);
  await removeFile(vm.path(SAVED_STATE_FILE));
}

/**
 * After a standard checkpoint was applied to a VM that is not running: its state becomes Now's saved
 * state (Hyper-V leaves the VM Saved), so `vm start` resumes the guest at the checkpoint's instant.
 * The checkpoint's file is linked, not copied (neither is ever written again).
 */
export async function savedStateFromCheckpoint(vm: VmFolder, c: Checkpoint, machine: string): Promise<SavedRecord> {
  if (c.state === null) throw new DiskchainError('INVALID_ARGUMENT', `checkpoint "${c.name}" holds no memory state`);
  const target = await savedStateTarget(vm);
  const partial = `${target}.partial`;
  await removeFile(partial);
  await linkFile(await vm.realPath(c.state), partial);
  await renameFile(partial, target);
  await syncFolder(vm.path(SAVED_DIR));
  return recordSavedState(vm, machine, c.id);
}
