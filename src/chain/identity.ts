import type { LinkIdentity, ParentReference } from '../formats/types.js';

/** Does `actual` (the parent's identity) satisfy what the child recorded? */
export function identityMatches(expected: ParentReference, actual: LinkIdentity): boolean {
  const e = expected.expected;
  if (e.format === 'vhdx' && actual.format === 'vhdx') {
    return e.dataWriteGuid === actual.dataWriteGuid || expected.alternateDataWriteGuid === actual.dataWriteGuid;
  }
  if (e.format === 'vhd' && actual.format === 'vhd') {
    // Windows diskpart records a parent timestamp of 0: then only the unique id can be compared.
    const sameId = e.uniqueId.toLowerCase() === actual.uniqueId.toLowerCase();
    return sameId && (e.timestamp === 0 || e.timestamp === actual.timestamp);
  }
  return false;
}

/** Are two identities the same disk state (not merely acceptable as a parent)? */
export function sameIdentity(a: LinkIdentity, b: LinkIdentity): boolean {
  if (a.format === 'vhdx' && b.format === 'vhdx') return a.dataWriteGuid === b.dataWriteGuid;
  if (a.format === 'vhd' && b.format === 'vhd') return a.uniqueId.toLowerCase() === b.uniqueId.toLowerCase() && a.timestamp === b.timestamp;
  return false;
}

export function describeIdentity(id: LinkIdentity): string {
  return id.format === 'vhdx' ? `DataWriteGuid ${id.dataWriteGuid}` : `unique id ${id.uniqueId}, timestamp ${id.timestamp}`;
}
