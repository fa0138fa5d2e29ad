/**
 * The durable decision of a coordinated group operation (one whose members include running VMs): a
 * group checkpoint (runtime/live-group.ts), the file `<first member>/journal/<group>.decision`, or a
 * group removal (runtime/live-group-remove.ts), `<first member>/journal/<group>.remove.decision`;
 * created once and never replaced. Its creation is the group's commit point (or abort point):
 *
 *   - the coordinator claims `commit` once every member is prepared, before any member commits;
 *   - a member that gives up on its coordinator (the connection closed, no word in time) and the
 *     recovery of a member's record claim `abort` before rolling back.
 *
 * A claim writes a temporary file, flushes it, and hard-links it to the name (link fails when the
 * name exists, where a rename would replace it), then flushes the folder: of two claims, the first
 * wins, and both claimants read the decision in force. So a coordinator that is slow rather than dead
 * can never commit a group a member already rolled back, and a member never rolls back a group the
 * coordinator committed. The file goes once no member holds a record of the group any more.
 */
import { randomBytes } from 'node:crypto';
import { link, open, readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import * as v from 'valibot';
import { removeFile, syncFolder } from '../io/durable.js';
import { DiskchainError } from '../io/errors.js';
import { JOURNAL_DIR } from './folder.js';
import { parseWith } from './manifest.js';
import { listRecords, readRecord } from './transaction.js';

export type GroupDecision = 'commit' | 'abort';

/** Which group operation a decision settles: the checkpoint's creation or its removal (each its own file). */
export type GroupOperation = 'create' | 'remove';

const SUFFIX = '.decision';
const REMOVE_SUFFIX = `.remove${SUFFIX}`;

/** The group operation a member's record takes part in. */
export function groupOperationOf(record: { operation: string }): GroupOperation {
  return record.operation === 'remove' ? 'remove' : 'create';
}

const DecisionSchema = v.strictObject({
  kind: v.literal('diskchain.group-decision'),
  version: v.literal(1),
  group: v.string(),
  decision: v.picklist(['commit', 'abort']),
  members: v.array(v.string()),
  /** A removal's decision (absent: a checkpoint's creation). */
  operation: v.optional(v.literal('remove')),
  /** Who claimed it (the coordinator, a member's worker, a recovery) and when. */
  by: v.string(),
  pid: v.number(),
  at: v.string(),
});
type DecisionRecord = v.InferOutput<typeof DecisionSchema>;

export function decisionPath(members: string[], group: string, operation: GroupOperation = 'create'): string {
  if (!/^[0-9a-f-]{36}$/.test(group)) throw new DiskchainError('INVALID_ARGUMENT', `"${group}" is not a group id`);
  return join(members[0]!, JOURNAL_DIR, `${group}${operation === 'remove' ? REMOVE_SUFFIX : SUFFIX}`);
}

async function readDecisionFile(path: string): Promise<DecisionRecord | undefined> {
  let text: string;
  try {
    if ((await stat(path)).size > 64 * 1024) throw new DiskchainError('MANIFEST_INVALID', 'a group decision is larger than any diskchain writes', { file: path, path: '$' });
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new DiskchainError('MANIFEST_INVALID', `a group decision is not valid JSON (${String(e)})`, { file: path, path: '$' });
  }
  return parseWith(DecisionSchema, value, path);
}

/** The decision in force, or null when nobody has decided yet. */
export async function readGroupDecision(members: string[], group: string, operation: GroupOperation = 'create'): Promise<GroupDecision | null> {
  return (await readDecisionFile(decisionPath(members, group, operation)))?.decision ?? null;
}

/** Claims `decision` unless one is in force already; returns the decision in force (durable on return). */
export async function claimGroupDecision(members: string[], group: string, decision: GroupDecision, by: string, operation: GroupOperation = 'create'): Promise<GroupDecision> {
  const path = decisionPath(members, group, operation);
  const record: DecisionRecord = { kind: 'diskchain.group-decision', version: 1, group, decision, members, ...(operation === 'remove' ? { operation } : {}), by, pid: process.pid, at: new Date().toISOString() };
  const tmp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
  const fh = await open(tmp, 'wx');
  try {
    await fh.writeFile(`${JSON.stringify(record, null, 2)}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
  let won = true;
  try {
    await link(tmp, path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    won = false;
  } finally {
    await removeFile(tmp);
  }
  await syncFolder(join(members[0]!, JOURNAL_DIR));
  if (won) return decision;
  return (await readDecisionFile(path))!.decision;
}

/** Removes the decision (the coordinator, once every member has settled). */
export async function removeGroupDecision(members: string[], group: string, operation: GroupOperation = 'create'): Promise<void> {
  const path = decisionPath(members, group, operation);
  await removeFile(path);
  await syncFolder(join(members[0]!, JOURNAL_DIR)).catch(() => undefined);
}

/**
 * Removes the decisions in this folder's journal that no member needs any more (no member holds a
 * record of the group): what a coordinator that died after the decision left.
 */
export async function pruneGroupDecisions(realFolder: string): Promise<void> {
  const names = (await readdir(join(realFolder, JOURNAL_DIR)).catch(() => [] as string[])).filter((n) => n.endsWith(SUFFIX));
  for (const name of names) {
    const path = join(realFolder, JOURNAL_DIR, name);
    const d = await readDecisionFile(path).catch(() => undefined);
    if (!d) continue;
    let pending = false;
    for (const member of d.members) {
      for (const p of await listRecords(member)) {
        const r = await readRecord(p).catch(() => undefined);
        if (r?.group?.id === d.group && groupOperationOf(r) === (d.operation ?? 'create')) pending = true;
      }
    }
    if (!pending) await removeFile(path);
  }
}
