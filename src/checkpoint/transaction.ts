/**
 * The transactions every VM operation is made of (written once; each operation file only plans):
 *
 *   plan ──► begin ──► prepare ──► [beforeCommit] ──► commit ──► finish
 *   (pure)   record    actions      caller's hook     vm.json    clean-up,
 *            written   (idempotent)                   replaced   record dropped
 *
 * - begin: the intent record `journal/<id>.json` holds the whole plan: the actions, the manifest to
 *   commit, the files to delete afterwards, and the generation it starts from.
 * - prepare: each action is idempotent (make a differencing child, a new disk, a JSON file, copy or
 *   move a file in, re-point an adopted child), so running it again after a crash is harmless.
 * - commit: vm.json replaced atomically, its generation one higher and naming this transaction; the
 *   one instant the VM changes from the old tree to the new one.
 * - finish: the files the old tree needed and the new one does not are deleted (never a file the
 *   committed manifest names), then the record.
 *
 * Recovery (recover.ts) reads a record left by a dead process: committed (vm.json names it) →
 * finish; not committed → roll back (the actions undone in reverse order), except a collapse, which
 * is finished (its merge resumes), and a group member whose group decided to commit.
 *
 * Between begin and commit, vm.json and every file it names are untouched: the old tree reads as it
 * did. After the commit the new tree's files all exist. So a crash at any instant leaves a VM that
 * opens with the old tree or the new one.
 */
import { copyFile, mkdir, open, readdir, rmdir, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import * as v from 'valibot';
import { linkFile, removeFile, renameFile, syncFolder, writeFileAtomic, writeFileAtomicSync } from '../io/durable.js';
import { DiskchainError, throwIfAborted } from '../io/errors.js';
import { randomGuid } from '../io/guid.js';
import { createChild } from '../chain/create-child.js';
import { linkTo } from '../chain/link-paths.js';
import { createDisk, openDisk } from '../chain/open-disk.js';
import type { LongOperationOptions } from '../ops/progress.js';
import { JOURNAL_DIR, SNAPSHOTS_DIR, type VmFolder } from './folder.js';
import { checkManifest, isConfinedRelative, ManifestSchema, parseWith, type Manifest } from './manifest.js';
import { carrySavedState } from './saved-state.js';
import { testPoint } from './test-points.js';

const Rel = v.pipe(v.string(), v.check(isConfinedRelative, 'expected a path inside the VM folder'));
const Abs = v.pipe(v.string(), v.startsWith('/', 'expected an absolute path'));

const ActionSchema = v.variant('kind', [
  /** A differencing child of `parent` (a checkpoint's new layer). */
  v.strictObject({ kind: v.literal('child'), file: Rel, parent: Rel }),
  /** A new empty dynamic disk. */
  v.strictObject({ kind: v.literal('disk'), file: Rel, format: v.picklist(['vhdx', 'vhd']), size: v.pipe(v.number(), v.safeInteger(), v.minValue(1)) }),
  /** A small JSON file (a checkpoint's config). */
  v.strictObject({ kind: v.literal('json'), file: Rel, value: v.unknown() }),
  /** A running VM's memory and device state, written by its worker before the commit (a standard checkpoint); rolled back by deleting it. */
  v.strictObject({ kind: v.literal('state'), file: Rel }),
  /** A file of the VM folder linked under a second name (a Saved VM's state kept in its checkpoint); rolled back by removing that name. */
  v.strictObject({ kind: v.literal('link'), from: Rel, file: Rel }),
  /** A file copied in from outside the folder. */
  v.strictObject({ kind: v.literal('copy'), from: Abs, file: Rel }),
  /** A file moved in (same file system); rolled back by moving it out again. */
  v.strictObject({ kind: v.literal('move'), from: Abs, file: Rel }),
  /** An adopted child re-pointed at its adopted parent (same identity); rolled back to `undo` paths. */
  v.strictObject({ kind: v.literal('relink'), file: Rel, parent: Rel, undo: v.nullable(v.strictObject({ child: Abs, parent: Abs })) }),
]);
export type Action = v.InferOutput<typeof ActionSchema>;

const CollapseSchema = v.strictObject({
  /** The unnamed node and its only child. */
  node: v.string(),
  child: v.string(),
  /** merge: the child's data into the node's file (the node's file survives); rebase: the node's data into the child's file. */
  direction: v.picklist(['merge', 'rebase']),
  /** The child's file (merge) or the node's (rebase): deleted after the commit. */
  victim: Rel,
  survivor: Rel,
  /** rebase: the node's parent file the child will name (null: the child becomes standalone). */
  onto: v.nullable(Rel),
});
export type CollapseSpec = v.InferOutput<typeof CollapseSchema>;

const RecordSchema = v.strictObject({
  kind: v.literal('diskchain.vm-transaction'),
  version: v.literal(1),
  id: v.pipe(v.string(), v.regex(/^[0-9a-f-]{36}$/)),
  operation: v.picklist(['vm-create', 'checkpoint-create', 'apply', 'remove', 'rename', 'collapse']),
  /** The manifest generation this transaction started from (0: the VM does not exist yet). */
  baseGeneration: v.pipe(v.number(), v.safeInteger(), v.minValue(0)),
  started: v.string(),
  pid: v.number(),
  command: v.string(),
  /** collapse: 'copy' until the data is in the survivor, then 'copied'. Others: 'planned', then 'collapsing' while follow-up merges run. */
  step: v.picklist(['planned', 'copy', 'copied', 'collapsing']),
  actions: v.array(ActionSchema),
  removes: v.array(Rel),
  /** Sources of a move across file systems: deleted once committed. */
  removeOutside: v.array(Abs),
  manifest: v.unknown(),
  /** A group member: the members' folders; the decision (offline groups, group.ts) or, coordinated: the decision file (group-decision.ts). */
  group: v.nullable(v.strictObject({ id: v.string(), members: v.array(Abs), decision: v.nullable(v.literal('commit')), coordinated: v.optional(v.literal(true)) })),
  collapse: v.nullable(CollapseSchema),
  /** Unnamed nodes this transaction leaves, merged with their only child after the commit (collapse.ts); the record stays until they are. */
  followUp: v.array(v.string()),
  /** A checkpoint of a Saved VM: Now's saved state follows Now onto the new children at finish (saved-state.ts). */
  carrySavedState: v.optional(v.literal(true)),
});
export type TransactionRecord = Omit<v.InferOutput<typeof RecordSchema>, 'manifest'> & { manifest: Manifest };

export type Operation = TransactionRecord['operation'];

/** What an operation file produces: nothing is written yet. */
export interface Plan {
  operation: Operation;
  /** The manifest to commit (generation and transaction are set by the commit). */
  manifest: Manifest;
  actions: Action[];
  removes: string[];
  removeOutside?: string[];
  group?: TransactionRecord['group'];
  collapse?: CollapseSpec;
  followUp?: string[];
  carrySavedState?: true;
}

const MAX_RECORD_BYTES = 32 * 1024 * 1024;

export function recordPath(vm: VmFolder, id: string): string {
  return join(vm.realFolder, JOURNAL_DIR, `${id}.json`);
}

/** Reads and validates a record (it is input: a damaged one is refused with its JSON path). */
export async function readRecord(path: string): Promise<TransactionRecord> {
  const s = await stat(path);
  if (s.size > MAX_RECORD_BYTES) throw new DiskchainError('MANIFEST_INVALID', `transaction record is ${s.size} bytes, larger than any diskchain writes`, { file: path, path: '$' });
  const fh = await open(path, 'r');
  let text: string;
  try {
    text = await fh.readFile('utf8');
  } finally {
    await fh.close();
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new DiskchainError('MANIFEST_INVALID', `transaction record is not valid JSON (${e instanceof Error ? e.message : String(e)})`, { file: path, path: '$' });
  }
  const record = parseWith(RecordSchema, value, path);
  const manifest = parseWith(ManifestSchema, record.manifest, path);
  checkManifest(manifest, path);
  return { ...record, manifest };
}

/** The records in journal/, oldest first. */
export async function listRecords(folder: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(join(folder, JOURNAL_DIR));
  } catch {
    return [];
  }
  return names.filter((n) => /^[0-9a-f-]{36}\.json$/.test(n)).sort().map((n) => join(folder, JOURNAL_DIR, n));
}

export interface PrepareOptions extends LongOperationOptions {}

export class Transaction {
  private constructor(
    readonly vm: VmFolder,
    public record: TransactionRecord,
    readonly path: string,
  ) {}

  /** Writes the intent record: from here on a crash is rolled back (or finished) by recovery. */
  static async begin(vm: VmFolder, plan: Plan, command: string): Promise<Transaction> {
    vm.requireWrite();
    const id = randomGuid();
    const record: TransactionRecord = {
      kind: 'diskchain.vm-transaction',
      version: 1,
      id,
      operation: plan.operation,
      baseGeneration: plan.operation === 'vm-create' ? 0 : vm.manifest.generation,
      started: new Date().toISOString(),
      pid: process.pid,
      command,
      step: plan.collapse ? 'copy' : 'planned',
      actions: plan.actions,
      removes: plan.removes,
      removeOutside: plan.removeOutside ?? [],
      manifest: plan.manifest,
      group: plan.group ?? null,
      collapse: plan.collapse ?? null,
      followUp: plan.followUp ?? [],
      ...(plan.carrySavedState ? { carrySavedState: true as const } : {}),
    };
    checkManifest(plan.manifest, 'the planned manifest');
    await mkdir(join(vm.realFolder, JOURNAL_DIR), { recursive: true });
    const tx = new Transaction(vm, record, recordPath(vm, id));
    await tx.save();
    try {
      testPoint(`${plan.operation}:recorded`);
    } catch (e) {
      // Nothing was done but the record: it goes, and the caller sees the failure.
      await tx.drop();
      throw e;
    }
    return tx;
  }

  static resume(vm: VmFolder, record: TransactionRecord, path: string): Transaction {
    return new Transaction(vm, record, path);
  }

  get id(): string {
    return this.record.id;
  }

  /**
   * Whether vm.json holds this transaction's commit. Later generations count too: an uncommitted record
   * is always settled before anything else commits, so a newer vm.json means this one committed.
   */
  get committed(): boolean {
    if (this.record.operation === 'vm-create') return this.vm.manifest.transaction === this.record.id;
    return this.vm.manifest.generation > this.record.baseGeneration;
  }

  async save(): Promise<void> {
    await writeFileAtomic(this.path, `${JSON.stringify(this.record, null, 2)}\n`);
  }

  /** For synchronous callbacks (a merge's phase report) that must record a step before returning. */
  saveSync(): void {
    writeFileAtomicSync(this.path, `${JSON.stringify(this.record, null, 2)}\n`);
  }

  async setStep(step: TransactionRecord['step']): Promise<void> {
    this.record.step = step;
    await this.save();
  }

  /** Runs every action (each idempotent), then flushes the folders they wrote into. */
  async prepare(options: PrepareOptions = {}): Promise<void> {
    const folders = new Set<string>();
    for (const [i, action] of this.record.actions.entries()) {
      throwIfAborted(options.signal);
      await runAction(this.vm, action, options);
      folders.add(dirname(this.vm.path(action.file)));
      testPoint(`${this.record.operation}:action:${i}`);
    }
    for (const f of folders) await syncFolder(f);
  }

  /** The commit: vm.json replaced by the planned manifest. */
  async commit(): Promise<void> {
    if (this.committed) return;
    await this.vm.writeManifest({ ...this.record.manifest, generation: Math.max(1, this.record.baseGeneration + 1), transaction: this.record.id });
    testPoint(`${this.record.operation}:committed`);
  }

  /** Deletes what the committed tree no longer needs (never a file it names), then the record. */
  async finish(): Promise<void> {
    if (!this.committed) throw new Error('internal: finish before commit');
    if (this.record.carrySavedState) await carrySavedState(this.vm, this.record.baseGeneration);
    const named = namedFiles(this.vm.manifest);
    const folders = new Set<string>();
    for (const [i, rel] of this.record.removes.entries()) {
      if (named.has(rel)) continue;
      const abs = this.vm.path(rel);
      await removeFile(abs);
      await removeFile(`${abs}.diskchain-merge.json`);
      folders.add(dirname(abs));
      // A checkpoint's own folder (Snapshots/<id>/) goes with its last file.
      if (rel.startsWith(`${SNAPSHOTS_DIR}/`)) await rmdir(dirname(abs)).then(() => folders.add(dirname(dirname(abs))), () => undefined);
      testPoint(`${this.record.operation}:removed:${i}`);
    }
    for (const abs of this.record.removeOutside) {
      await removeFile(abs);
      folders.add(dirname(abs));
    }
    for (const f of folders) await syncFolder(f).catch(() => undefined);
    if (this.record.followUp.length > 0) {
      if (this.record.step !== 'collapsing') await this.setStep('collapsing');
    } else await this.drop();
    testPoint(`${this.record.operation}:finished`);
  }

  /** Undoes the actions in reverse order (only before the commit), then drops the record. */
  async rollback(): Promise<void> {
    if (this.committed) throw new Error('internal: rollback after commit');
    // A file the current vm.json names is never deleted, whatever a record says.
    const named = this.record.operation === 'vm-create' ? new Set<string>() : namedFiles(this.vm.manifest);
    for (const action of [...this.record.actions].reverse()) if (!named.has(action.file)) await undoAction(this.vm, action);
    await this.drop();
  }

  /** Removes the record: the transaction is over. */
  async drop(): Promise<void> {
    await removeFile(this.path);
    await removeFile(`${this.path}.tmp`);
    await syncFolder(dirname(this.path));
  }
}

/** Every file the manifest names (node files, checkpoint configs and states). */
export function namedFiles(m: Manifest): Set<string> {
  const out = new Set<string>(m.nodes.map((n) => n.file));
  for (const c of m.checkpoints) {
    out.add(c.config);
    if (c.state) out.add(c.state);
  }
  return out;
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** Copies a file in under a partial name, flushes it, renames it into place. */
async function copyIn(from: string, to: string): Promise<void> {
  const partial = `${to}.diskchain-partial`;
  await removeFile(partial);
  await copyFile(from, partial);
  const fh = await open(partial, 'r+');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
  await renameFile(partial, to);
}

async function runAction(vm: VmFolder, action: Action, options: PrepareOptions): Promise<void> {
  const file = vm.path(action.file);
  await mkdir(dirname(file), { recursive: true });
  switch (action.kind) {
    case 'child': {
      // Nothing has written into a child before its commit: making it again is always safe.
      await removeFile(file);
      const disk = await createChild(file, await vm.realPath(action.parent));
      await disk.close();
      return;
    }
    case 'disk': {
      await removeFile(file);
      const parentFolder = dirname(file);
      const disk = await createDisk(file, action.format, { diskType: 'dynamic', virtualSize: action.size, ...(options.signal ? { signal: options.signal } : {}) });
      await disk.close();
      await syncFolder(parentFolder);
      return;
    }
    case 'json':
      await writeFileAtomic(file, `${JSON.stringify(action.value, null, 2)}\n`);
      return;
    case 'state':
      return; // the worker writes it between prepare and commit
    case 'link':
      if (!(await exists(file))) await linkFile(vm.path(action.from), file);
      return;
    case 'copy':
      if (!(await exists(file))) await copyIn(action.from, file);
      return;
    case 'move':
      if (await exists(file)) return;
      await renameFile(action.from, file);
      await syncFolder(dirname(action.from));
      return;
    case 'relink': {
      const parent = await vm.realPath(action.parent);
      await setParentTo(file, parent);
      return;
    }
  }
}

async function undoAction(vm: VmFolder, action: Action): Promise<void> {
  const file = vm.path(action.file);
  switch (action.kind) {
    case 'child':
    case 'disk':
    case 'json':
    case 'state':
    case 'link':
    case 'copy':
      await removeFile(file);
      await removeFile(`${file}.tmp`);
      await removeFile(`${file}.diskchain-partial`);
      // A checkpoint's own folder goes with its config.
      if (action.file.startsWith(`${SNAPSHOTS_DIR}/`)) await rmdir(dirname(file)).catch(() => undefined);
      return;
    case 'move':
      if ((await exists(file)) && !(await exists(action.from))) {
        await renameFile(file, action.from);
        await syncFolder(dirname(action.from));
      }
      return;
    case 'relink':
      // Point the adopted child back at where its parent will be once moved back out.
      if (action.undo && (await exists(file))) await setParentTo(file, vm.path(action.parent), action.undo);
      return;
  }
}

/** Rewrites the parent link of `childPath` to name `parentPath` (its identity unchanged); `as` names the paths as they will be. */
async function setParentTo(childPath: string, parentPath: string, as?: { child: string; parent: string }): Promise<void> {
  const parent = await openDisk(parentPath);
  const identity = parent.identity();
  await parent.close();
  const child = await openDisk(childPath, { writable: true });
  try {
    if (!child.setParent) throw new DiskchainError('UNSUPPORTED', `cannot change the parent of a ${child.format} disk`, { file: childPath });
    await child.setParent(as ? linkTo(as.child, as.parent, identity) : linkTo(childPath, parentPath, identity));
  } finally {
    await child.close();
  }
}

export interface RunPlanOptions extends PrepareOptions {
  command: string;
  /**
   * Called after the actions and before the commit: a running VM's worker switches its open
   * leaves to the new children here (the guest is paused). Throwing rolls the transaction back.
   */
  beforeCommit?: (tx: Transaction) => Promise<void>;
}

/** begin → prepare → beforeCommit → commit → finish; a failure before the commit rolls back. */
export async function runPlan(vm: VmFolder, plan: Plan, options: RunPlanOptions): Promise<Transaction> {
  const tx = await Transaction.begin(vm, plan, options.command);
  try {
    await tx.prepare(options);
    await options.beforeCommit?.(tx);
    await tx.commit();
  } catch (e) {
    if (!tx.committed) await tx.rollback().catch(() => undefined);
    throw e;
  }
  await tx.finish();
  return tx;
}
