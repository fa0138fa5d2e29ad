import { createHash } from 'node:crypto';
import { realpath, stat } from 'node:fs/promises';
import { DiskchainError } from '../io/errors.js';
import type { LinkIdentity, VirtualDisk } from '../formats/types.js';
import { describeIdentity, identityMatches, sameIdentity } from '../chain/identity.js';
import { openDisk } from '../chain/open-chain.js';
import type { JournalDependent, JournalLayer, MergeJournal } from './merge-journal.js';

/**
 * Is this file still the one the merge journal recorded? Every phase asks before it touches a file,
 * and a file that is not is never changed or deleted (a same-named file put in place, a layer written
 * since the journal was made).
 *
 * - Identity: VHDX DataWriteGuid (a new one at the first write of every session, MS-VHDX §2.2.2), VHD
 *   unique id and timestamp (which a write does not change).
 * - Fingerprint: a hash of the layer's allocation map (its BAT, and for VHD the sector bitmaps: what
 *   a write into a hole changes), and for VHD the file's size and modification time (what any write
 *   changes; a VHD has nothing like the DataWriteGuid). A VHDX's size and mtime are left out: the
 *   merge's own parent_linkage2 update (through the log) touches the lowest layer, and the
 *   DataWriteGuid already covers writes. The merge syncs each layer before recording its fingerprint,
 *   so a power cut cannot turn a time back to one older than recorded (docs/crash-safety.md).
 */
export interface Fingerprint {
  /** VHD only (a VHDX's size changes only with its allocation map, or with the merge's own log writes). */
  size?: number;
  /** VHD only. */
  mtimeMs?: number;
  /** sha256 of the layer's own extents (offset, length, state). */
  map: string;
}

/**
 * `withTime: false` leaves the time out (the target after the copy: the merge itself wrote it last,
 * and its identity and allocation map say whether it is still the file the copy left).
 */
export async function fingerprint(disk: VirtualDisk, options: { withTime?: boolean } = {}): Promise<Fingerprint> {
  const hash = createHash('sha256');
  const step = 64 * 1024 * 1024 * 1024;
  for (let at = 0; at < disk.virtualSize; at += step) {
    for (const e of await disk.map(at, Math.min(step, disk.virtualSize - at))) hash.update(`${e.offset}:${e.length}:${e.state};`);
  }
  if (disk.format !== 'vhd') return { map: hash.digest('hex') };
  const s = await stat(disk.path);
  return { size: s.size, ...((options.withTime ?? true) ? { mtimeMs: s.mtimeMs } : {}), map: hash.digest('hex') };
}

/** What differs between two fingerprints, or undefined when they are the same. */
function fingerprintChange(was: Fingerprint, now: Fingerprint): string | undefined {
  if (was.map !== now.map) return 'its allocation map changed';
  if (was.size !== undefined && was.size !== now.size) return `its size changed from ${was.size} to ${now.size} bytes`;
  // Within a millisecond counts as the same: what copy tools (and a restore) keep of a time.
  if (was.mtimeMs !== undefined && now.mtimeMs !== undefined && Math.abs(was.mtimeMs - now.mtimeMs) >= 1) return 'its modification time changed';
  return undefined;
}

/** The refusal of a resume: the journal no longer fits the files; nothing was changed. */
export function journalRefused(journalPath: string, journal: MergeJournal, why: string): DiskchainError {
  const child = journal.layers[0]!.path;
  return new DiskchainError(
    'JOURNAL_MISMATCH',
    `the pending merge of ${child} into ${journal.target.path} (phase ${journal.phase}, journal ${journalPath}) cannot go on: ${why}. Nothing was changed. Find out what happened to the file; 'diskchain merge --abandon ${child}' ends the pending merge, rolling back what can be rolled back`,
    { file: journalPath, phase: journal.phase },
  );
}

export interface Checker {
  journalPath: string;
  journal: MergeJournal;
}

/** The file at `path` resolves to `realPath`, or a refusal. */
async function samePlace(c: Checker, path: string, want: string): Promise<void> {
  const real = await realpath(path).catch(() => undefined);
  if (real !== want) throw journalRefused(c.journalPath, c.journal, `${path} is now ${real ?? 'missing'}, the journal recorded ${want}`);
}

/**
 * A merged layer is the one recorded: same place, same identity, same fingerprint. Returns false when
 * it is gone (the remove phase may have deleted it before a crash).
 */
export async function checkLayer(c: Checker, layer: JournalLayer, disk?: VirtualDisk): Promise<boolean> {
  if (!disk && !(await stat(layer.path).catch(() => undefined))) return false;
  await samePlace(c, layer.path, layer.realPath);
  const opened = disk ?? (await openDisk(layer.path));
  try {
    if (!sameIdentity(opened.identity(), layer.identity)) {
      throw journalRefused(c.journalPath, c.journal, `${layer.path} now has ${describeIdentity(opened.identity())}, the journal recorded ${describeIdentity(layer.identity)}: it was written or replaced after the merge started`);
    }
    if (layer.fingerprint) {
      const change = fingerprintChange(layer.fingerprint, await fingerprint(opened));
      if (change) throw journalRefused(c.journalPath, c.journal, `${layer.path} was changed after the merge started (${change})`);
    }
  } finally {
    if (!disk) await opened.close();
  }
  return true;
}

/** The identities the target may carry during the copy: the one it had, or the merge's own DataWriteGuid. */
export function targetAcceptedInCopy(journal: MergeJournal, id: LinkIdentity): boolean {
  const sessionGuid = journal.target.sessionDataWriteGuid;
  return sameIdentity(id, journal.target.identityBefore) || (id.format === 'vhdx' && sessionGuid !== undefined && id.dataWriteGuid === sessionGuid);
}

/** The target is the one recorded: during the copy by its identities, after it also by its fingerprint. */
export async function checkTarget(c: Checker, disk?: VirtualDisk): Promise<void> {
  const t = c.journal.target;
  await samePlace(c, t.path, t.realPath);
  const opened = disk ?? (await openDisk(t.path));
  try {
    const id = opened.identity();
    if (t.identityAfter) {
      if (!sameIdentity(id, t.identityAfter)) throw journalRefused(c.journalPath, c.journal, `the target ${t.path} now has ${describeIdentity(id)}, the journal recorded ${describeIdentity(t.identityAfter)} when the copy ended: it was written or replaced since`);
      const change = t.fingerprintAfter && fingerprintChange(t.fingerprintAfter, await fingerprint(opened));
      if (change) throw journalRefused(c.journalPath, c.journal, `the target ${t.path} was changed after the copy ended (${change})`);
    } else if (!targetAcceptedInCopy(c.journal, id)) {
      throw journalRefused(c.journalPath, c.journal, `the target ${t.path} now has ${describeIdentity(id)}, which is neither the identity it had nor the one the merge gives it`);
    }
  } finally {
    if (!disk) await opened.close();
  }
}

/** The disk's own id, which survives writes and parent rewrites. */
export function diskIdOf(disk: VirtualDisk): string {
  const d = disk.details();
  const id = disk.format === 'vhdx' ? d.virtualDiskId : d.uniqueId;
  return typeof id === 'string' ? id.toLowerCase() : '';
}

/**
 * A child to hand over is the one recorded (same place, same disk id) and names the merged child or
 * already the target. Returns where it points; a version 1 record (a path) is checked by its link only.
 */
export async function checkDependent(c: Checker, dependent: JournalDependent | string, disk: VirtualDisk): Promise<'child' | 'target'> {
  const path = typeof dependent === 'string' ? dependent : dependent.path;
  if (typeof dependent !== 'string') {
    await samePlace(c, path, dependent.realPath);
    if (diskIdOf(disk) !== dependent.diskId) throw journalRefused(c.journalPath, c.journal, `${path} is another disk than the one recorded (id ${diskIdOf(disk)}, the journal recorded ${dependent.diskId})`);
  }
  const ref = disk.parent;
  const after = c.journal.target.identityAfter;
  if (ref && after && identityMatches(ref, after) && sameIdentity(ref.expected, after)) return 'target';
  // Either link value names the merged child: an abandoned merge leaves the child's children naming it
  // by parent_linkage2 (the DataWriteGuid the merge's writes gave it, MS-VHDX §2.6.2.6).
  if (ref && identityMatches(ref, c.journal.layers[0]!.identity)) return 'child';
  throw journalRefused(c.journalPath, c.journal, `${path} names neither the merged child nor the target as its parent`);
}
