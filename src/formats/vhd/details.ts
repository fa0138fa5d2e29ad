import { chsSectors } from './geometry.js';
import { timeStampToIso, versionText } from './footer.js';
import type { VhdLayout } from './layout.js';
import { locatorSpaceBytes } from './parent-locator.js';
import { SECTOR } from './constants.js';

/** Plain JSON facts for `diskchain info`: footer, dynamic header and parent locator fields. */
export function vhdDetails(l: VhdLayout, allocatedBlocks: number): Record<string, unknown> {
  const f = l.footer;
  const out: Record<string, unknown> = {
    diskType: l.diskType,
    creatorApplication: f.creatorApplication,
    creatorVersion: versionText(f.creatorVersion),
    creatorHostOs: f.creatorHostOs,
    fileFormatVersion: versionText(f.fileFormatVersion),
    features: f.features,
    timeStamp: f.timeStamp,
    timeStampIso: timeStampToIso(f.timeStamp),
    uniqueId: f.uniqueId,
    originalSize: f.originalSize.toString(),
    currentSize: l.virtualSize,
    geometry: { ...f.geometry },
    chsSize: chsSectors(f.geometry) * SECTOR,
    savedState: f.savedState !== 0,
    footer: { source: l.footerSource, offset: l.footerOffset, endFooter: l.endFooterState, copyAtOffset0: l.copyState },
  };
  if (l.diskType === 'fixed' || !l.header) return out;
  const h = l.header;
  Object.assign(out, {
    dynamicHeaderOffset: l.headerOffset,
    tableOffset: l.tableOffset,
    maxTableEntries: h.maxTableEntries,
    blockSize: l.blockSize,
    allocatedBlocks,
    totalBlocks: l.blockCount,
  });
  if (l.diskType === 'differencing') {
    Object.assign(out, {
      parentUniqueId: h.parentUniqueId,
      parentTimeStamp: h.parentTimeStamp,
      parentTimeStampIso: timeStampToIso(h.parentTimeStamp),
      parentUnicodeName: h.parentUnicodeName,
    });
  }
  out.parentLocators = l.locators.map((p) => ({
    index: p.index,
    platformCode: p.entry.platformCode,
    platformDataSpace: p.entry.platformDataSpace,
    platformDataSpaceBytes: locatorSpaceBytes(p.entry),
    platformDataLength: p.entry.platformDataLength,
    platformDataOffset: p.entry.platformDataOffset.toString(),
    ...(p.path !== undefined ? { path: p.path } : {}),
    ...(p.problem !== undefined ? { problem: p.problem } : {}),
  }));
  return out;
}
