import type { ByteSource } from '../../io/byte-source.js';
import { corrupt, DiskchainError } from '../../io/errors.js';
import { NULL_GUID } from '../../io/guid.js';
import { BatLayout } from './bat.js';
import { decodeFileIdentifier, hasFileIdentifierSignature } from './file-identifier.js';
import { decodeHeader, HEADER_OFFSETS, HEADER_SIZE, type VhdxHeader } from './header.js';
import {
  decodeFileParameters,
  decodePage83,
  decodeSectorSize,
  decodeVirtualDiskSize,
  FILE_PARAMETERS_GUID,
  KNOWN_ITEMS,
  LOGICAL_SECTOR_SIZE_GUID,
  MIB,
  PAGE_83_DATA_GUID,
  PARENT_LOCATOR_GUID,
  PHYSICAL_SECTOR_SIZE_GUID,
  VIRTUAL_DISK_SIZE_GUID,
  type FileParameters,
} from './metadata-items.js';
import { decodeMetadataTable, METADATA_TABLE_SIZE, type MetadataEntry } from './metadata-table.js';
import { decodeParentLocator, locatorValue, VHDX_LOCATOR_TYPE_GUID, type ParentLocator } from './parent-locator.js';
import { BAT_REGION_GUID, decodeRegionTable, METADATA_REGION_GUID, REGION_TABLE_OFFSETS, REGION_TABLE_SIZE, type RegionEntry } from './region-table.js';

export const HEADER_SECTION_SIZE = MIB;

/** Which header slot is current, and the header itself (§2.2.2). */
export interface CurrentHeader {
  slot: 0 | 1;
  header: VhdxHeader;
}

/** Everything read from a VHDX file's fixed structures, after any log replay. */
export interface VhdxLayout {
  creator: string;
  current: CurrentHeader;
  regions: RegionEntry[];
  bat: RegionEntry;
  metadata: RegionEntry;
  metadataEntries: MetadataEntry[];
  fileParameters: FileParameters;
  virtualSize: number;
  logicalSectorSize: number;
  physicalSectorSize: number;
  virtualDiskId: string;
  parentLocator: ParentLocator | undefined;
  batLayout: BatLayout;
}

/** Reads the file identifier and both headers; the current one is the valid one with the higher sequence. */
export async function readHeaders(source: ByteSource): Promise<{ creator: string; current: CurrentHeader }> {
  const file = source.name;
  const size = await source.size();
  if (size < HEADER_SECTION_SIZE) {
    throw new DiskchainError('TRUNCATED', `file is ${size} bytes, smaller than the 1 MiB VHDX header section`, { file, offset: size });
  }
  const section = new Uint8Array(REGION_TABLE_OFFSETS[0]);
  await source.read(section, 0);
  if (!hasFileIdentifierSignature(section)) throw new DiskchainError('UNKNOWN_FORMAT', 'not a VHDX file (no "vhdxfile" signature)', { file, offset: 0 });
  const decoded = HEADER_OFFSETS.map((at) => decodeHeader(section.subarray(at, at + HEADER_SIZE), file, at));
  const valid = decoded.flatMap((d, slot) => (d.ok ? [{ slot: slot as 0 | 1, header: d.header }] : []));
  if (valid.length === 0) {
    const reasons = decoded.map((d, i) => `header ${i + 1}: ${d.ok ? 'ok' : d.reason}`).join('; ');
    throw corrupt(`no valid VHDX header (${reasons})`, file, HEADER_OFFSETS[0]);
  }
  const current = valid.reduce((a, b) => (b.header.sequenceNumber > a.header.sequenceNumber ? b : a));
  const h = current.header;
  const at = HEADER_OFFSETS[current.slot];
  if (h.version !== 1) throw new DiskchainError('UNSUPPORTED', `VHDX header version ${h.version} is not 1`, { file, offset: at + 66 });
  if (h.logVersion !== 0 && h.logGuid !== NULL_GUID) throw new DiskchainError('UNSUPPORTED', `VHDX log version ${h.logVersion} is not 0`, { file, offset: at + 64 });
  if (h.logOffset < MIB || h.logOffset % MIB !== 0 || h.logLength % MIB !== 0 || h.logLength === 0) {
    throw corrupt(`log offset ${h.logOffset} / length ${h.logLength} are not non-zero 1 MiB multiples after the header section`, file, at + 68);
  }
  if (h.logOffset + h.logLength > size) throw corrupt(`log (${h.logOffset}+${h.logLength}) extends past the end of the file (${size})`, file, at + 72);
  return { creator: decodeFileIdentifier(section).creator, current };
}

/** Reads the region tables and metadata (after replay: `source` shows the replayed file). */
export async function readLayout(source: ByteSource, creator: string, current: CurrentHeader): Promise<VhdxLayout> {
  const file = source.name;
  const size = await source.size();
  const regions = await readRegionTable(source, current.header, size);
  const bat = regions.find((r) => r.guid === BAT_REGION_GUID);
  const metadata = regions.find((r) => r.guid === METADATA_REGION_GUID);
  if (!bat || !metadata) throw corrupt('region table lacks the BAT or the metadata region', file, REGION_TABLE_OFFSETS[0]);
  if (metadata.length < METADATA_TABLE_SIZE) throw corrupt(`metadata region is only ${metadata.length} bytes`, file, metadata.fileOffset);

  const table = new Uint8Array(METADATA_TABLE_SIZE);
  await source.read(table, metadata.fileOffset);
  const metadataEntries = decodeMetadataTable(table, metadata.length, file, metadata.fileOffset);
  for (const e of metadataEntries) {
    if (e.isRequired && !e.isUser && !KNOWN_ITEMS.has(e.itemId)) {
      throw new DiskchainError('UNSUPPORTED', `metadata item ${e.itemId} is required but unknown to diskchain`, { file, offset: metadata.fileOffset });
    }
    if (e.isRequired && e.isUser) throw new DiskchainError('UNSUPPORTED', `user metadata item ${e.itemId} is marked required`, { file, offset: metadata.fileOffset });
  }
  const item = async (guid: string): Promise<{ data: Uint8Array; offset: number } | undefined> => {
    const e = metadataEntries.find((m) => m.itemId === guid && !m.isUser);
    if (!e) return undefined;
    const data = new Uint8Array(e.length);
    await source.read(data, metadata.fileOffset + e.offset);
    return { data, offset: metadata.fileOffset + e.offset };
  };
  const must = async (guid: string, what: string) => {
    const found = await item(guid);
    if (!found) throw corrupt(`required metadata item "${what}" is missing`, file, metadata.fileOffset);
    return found;
  };
  const fp = await must(FILE_PARAMETERS_GUID, 'file parameters');
  const fileParameters = decodeFileParameters(fp.data, file, fp.offset);
  const ls = await must(LOGICAL_SECTOR_SIZE_GUID, 'logical sector size');
  const logicalSectorSize = decodeSectorSize(ls.data, 'logical sector size', file, ls.offset);
  const ps = await must(PHYSICAL_SECTOR_SIZE_GUID, 'physical sector size');
  const physicalSectorSize = decodeSectorSize(ps.data, 'physical sector size', file, ps.offset);
  const vs = await must(VIRTUAL_DISK_SIZE_GUID, 'virtual disk size');
  const virtualSize = decodeVirtualDiskSize(vs.data, logicalSectorSize, file, vs.offset);
  const p83 = await must(PAGE_83_DATA_GUID, 'page 83 data');
  const virtualDiskId = decodePage83(p83.data, file, p83.offset);

  let parentLocator: ParentLocator | undefined;
  if (fileParameters.hasParent) {
    const pl = await must(PARENT_LOCATOR_GUID, 'parent locator');
    parentLocator = decodeParentLocator(pl.data, file, pl.offset);
    if (parentLocator.locatorType !== VHDX_LOCATOR_TYPE_GUID) {
      throw new DiskchainError('UNSUPPORTED', `parent locator type ${parentLocator.locatorType} is not the VHDX locator`, { file, offset: pl.offset });
    }
    if (!locatorValue(parentLocator, 'parent_linkage')) throw corrupt('parent locator has no parent_linkage', file, pl.offset);
  }

  const batLayout = new BatLayout(virtualSize, fileParameters.blockSize, logicalSectorSize, fileParameters.hasParent);
  const needed = (batLayout.payloadIndex(batLayout.payloadBlocks - 1) + 1) * 8;
  if (bat.length < needed) throw corrupt(`BAT region holds ${bat.length} bytes but ${needed} are needed for ${batLayout.payloadBlocks} blocks`, file, bat.fileOffset);

  return {
    creator,
    current,
    regions,
    bat,
    metadata,
    metadataEntries,
    fileParameters,
    virtualSize,
    logicalSectorSize,
    physicalSectorSize,
    virtualDiskId,
    parentLocator,
    batLayout,
  };
}

/** §2.2.3 The first valid region table; entries must be aligned, inside the file and not overlapping. */
async function readRegionTable(source: ByteSource, header: VhdxHeader, size: number): Promise<RegionEntry[]> {
  const file = source.name;
  const reasons: string[] = [];
  for (const at of REGION_TABLE_OFFSETS) {
    const buf = new Uint8Array(REGION_TABLE_SIZE);
    await source.read(buf, at);
    const decoded = decodeRegionTable(buf, file, at);
    if (!decoded.ok) {
      reasons.push(`region table at ${at}: ${decoded.reason}`);
      continue;
    }
    const spans: [number, number, string][] = [[header.logOffset, header.logOffset + header.logLength, 'the log']];
    for (const r of decoded.entries) {
      if (r.required && r.guid !== BAT_REGION_GUID && r.guid !== METADATA_REGION_GUID) {
        throw new DiskchainError('UNSUPPORTED', `region ${r.guid} is required but unknown to diskchain`, { file, offset: at });
      }
      if (r.fileOffset < MIB || r.fileOffset % MIB !== 0 || r.length === 0 || r.length % MIB !== 0) {
        throw corrupt(`region ${r.guid} (offset ${r.fileOffset}, length ${r.length}) is not 1 MiB aligned after the header section`, file, at);
      }
      if (r.fileOffset + r.length > size) throw corrupt(`region ${r.guid} extends past the end of the file (${size})`, file, at);
      for (const [s, e, what] of spans) {
        if (r.fileOffset < e && r.fileOffset + r.length > s) throw corrupt(`region ${r.guid} overlaps ${what}`, file, at);
      }
      spans.push([r.fileOffset, r.fileOffset + r.length, `region ${r.guid}`]);
    }
    return decoded.entries;
  }
  throw corrupt(`no valid region table (${reasons.join('; ')})`, file, REGION_TABLE_OFFSETS[0]);
}
