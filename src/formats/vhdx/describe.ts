import { corrupt } from '../../io/errors.js';
import { isGuidString } from '../../io/guid.js';
import type { ParentLocatorEntry, ParentReference } from '../types.js';
import type { VhdxHeader } from './header.js';
import type { VhdxLayout } from './layout.js';
import { locatorValue, type ParentLocator } from './parent-locator.js';

/** §2.6.2.6.3 The path keys, in the order a reader tries them. */
const PATH_KEYS: [string, ParentLocatorEntry['kind']][] = [
  ['relative_path', 'relative'],
  ['volume_path', 'volume'],
  ['absolute_win32_path', 'absolute'],
];

/** parent_linkage holds "{guid}": the parent's DataWriteGuid when the child was made. */
export function parseLinkage(value: string, file: string): string {
  const bare = value.trim().replace(/^\{/, '').replace(/\}$/, '');
  if (!isGuidString(bare)) throw corrupt(`parent_linkage "${value}" is not a GUID`, file);
  return bare.toLowerCase();
}

export function formatLinkage(guid: string): string {
  return `{${guid.toLowerCase()}}`;
}

export function vhdxParentReference(locator: ParentLocator, file: string): ParentReference {
  const locators: ParentLocatorEntry[] = [];
  for (const [key, kind] of PATH_KEYS) {
    const path = locatorValue(locator, key);
    if (path) locators.push({ kind, key, path });
  }
  const linkage2 = locatorValue(locator, 'parent_linkage2');
  return {
    locators,
    expected: { format: 'vhdx', dataWriteGuid: parseLinkage(locatorValue(locator, 'parent_linkage')!, file) },
    ...(linkage2 ? { alternateDataWriteGuid: parseLinkage(linkage2, file) } : {}),
  };
}

/** Plain facts for `info --json`. */
export function vhdxDetails(layout: VhdxLayout, header: VhdxHeader): Record<string, unknown> {
  return {
    creator: layout.creator,
    virtualDiskId: layout.virtualDiskId,
    fileWriteGuid: header.fileWriteGuid,
    dataWriteGuid: header.dataWriteGuid,
    logGuid: header.logGuid,
    headerSequenceNumber: header.sequenceNumber.toString(),
    logOffset: header.logOffset,
    logLength: header.logLength,
    batOffset: layout.bat.fileOffset,
    batLength: layout.bat.length,
    metadataOffset: layout.metadata.fileOffset,
    chunkRatio: layout.batLayout.chunkRatio,
    payloadBlocks: layout.batLayout.payloadBlocks,
    leaveBlockAllocated: layout.fileParameters.leaveBlockAllocated,
    parentLocator: layout.parentLocator ? Object.fromEntries(layout.parentLocator.entries) : null,
  };
}
