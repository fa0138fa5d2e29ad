import type { LinkIdentity, ParentReference } from '../formats/types.js';

/** Does `actual` (the parent's identity) satisfy what the child recorded? */
export function identityMatches(expected: ParentReference, actual: LinkIdentity): boolean {
  return identityMatchedBy(expected, actual) !== null;
}

/**
 * Which recorded value `actual` satisfies: the primary one (VHDX parent_linkage, VHD unique id and
 * timestamp), the alternate (VHDX parent_linkage2, which a merge into the parent sets), or none.
 */
export function identityMatchedBy(expected: ParentReference, actual: LinkIdentity): 'primary' | 'alternate' | null {
  const e = expected.expected;
  if (e.format === 'vhdx' && actual.format === 'vhdx') {
    if (e.dataWriteGuid === actual.dataWriteGuid) return 'primary';
    return expected.alternateDataWriteGuid === actual.dataWriteGuid ? 'alternate' : null;
  }
  if (e.format === 'vhd' && actual.format === 'vhd') {
    // Windows diskpart records a parent timestamp of 0: then only the unique id can be compared.
    const sameId = e.uniqueId.toLowerCase() === actual.uniqueId.toLowerCase();
    return sameId && (e.timestamp === 0 || e.timestamp === actual.timestamp) ? 'primary' : null;
  }
  return null;
}

/** Are two identities the same disk state (not merely acceptable as a parent)? */
export function sameIdentity(a: LinkIdentity, b: LinkIdentity): boolean {
  if (a.format === 'vhdx' && b.format === 'vhdx') return a.dataWriteGuid === b.dataWriteGuid;
  if (a.format === 'vhd' && b.format === 'vhd') return a.uniqueId.toLowerCase() === b.uniqueId.toLowerCase() && a.timestamp === b.timestamp;
  return false;
}

/**
 * A key every identity that can satisfy a link with this identity shares: what identityMatches
 * compares first (the DataWriteGuid, or the VHD unique id, since a recorded timestamp may be 0).
 * For indexing; identityMatches still decides.
 */
export function linkKey(id: LinkIdentity): string {
  return id.format === 'vhdx' ? `vhdx:${id.dataWriteGuid}` : `vhd:${id.uniqueId.toLowerCase()}`;
}

/** Equal exactly when sameIdentity holds. */
export function identityKey(id: LinkIdentity): string {
  return id.format === 'vhdx' ? `vhdx:${id.dataWriteGuid}` : `vhd:${id.uniqueId.toLowerCase()}:${id.timestamp}`;
}

export function describeIdentity(id: LinkIdentity): string {
  return id.format === 'vhdx' ? `DataWriteGuid ${id.dataWriteGuid}` : `unique id ${id.uniqueId}, timestamp ${id.timestamp}`;
}
