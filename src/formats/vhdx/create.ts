import { writeZeros, type ByteSource } from '../../io/byte-source.js';
import { DiskchainError } from '../../io/errors.js';
import { NULL_GUID, randomGuid } from '../../io/guid.js';
import type { CreateOptions } from '../types.js';
import { BatLayout, encodeBatEntry, PAYLOAD_BLOCK_FULLY_PRESENT } from './bat.js';
import { formatLinkage } from './describe.js';
import type { VhdxDisk } from './disk.js';
import { encodeFileIdentifier } from './file-identifier.js';
import { encodeHeader, HEADER_OFFSETS } from './header.js';
import {
  encodeFileParameters,
  encodeGuidItem,
  encodeU32,
  encodeU64,
  FILE_PARAMETERS_GUID,
  LOGICAL_SECTOR_SIZE_GUID,
  MAX_VIRTUAL_SIZE,
  MIB,
  PAGE_83_DATA_GUID,
  PARENT_LOCATOR_GUID,
  PHYSICAL_SECTOR_SIZE_GUID,
  validBlockSize,
  VIRTUAL_DISK_SIZE_GUID,
} from './metadata-items.js';
import { encodeMetadataTable, METADATA_TABLE_SIZE, type MetadataEntry } from './metadata-table.js';
import { openVhdx } from './open.js';
import { encodeParentLocator, VHDX_LOCATOR_TYPE_GUID } from './parent-locator.js';
import { BAT_REGION_GUID, encodeRegionTable, METADATA_REGION_GUID, REGION_TABLE_OFFSETS } from './region-table.js';
import { isWin32Absolute } from '../win32-path.js';

export const DEFAULT_BLOCK_SIZE = 32 * MIB;
/** Hyper-V makes checkpoints (.avhdx) with 2 MiB blocks. */
export const DEFAULT_DIFFERENCING_BLOCK_SIZE = 2 * MIB;
const LOG_OFFSET = MIB;
const LOG_LENGTH = MIB;
const METADATA_OFFSET = 2 * MIB;
const METADATA_LENGTH = MIB;
const BAT_OFFSET = 3 * MIB;
const CREATOR = 'diskchain';

/** Writes a new VHDX into an empty source: §2.1 layout with the log at 1 MiB, metadata at 2 MiB, BAT at 3 MiB. */
export async function createVhdx(source: ByteSource, options: CreateOptions): Promise<VhdxDisk> {
  const file = source.name;
  const parent = options.parent;
  const logicalSectorSize = parent?.logicalSectorSize ?? options.logicalSectorSize ?? 512;
  const physicalSectorSize = parent?.physicalSectorSize ?? options.physicalSectorSize ?? 4096;
  const virtualSize = parent?.virtualSize ?? options.virtualSize;
  const blockSize = options.blockSize ?? (parent ? DEFAULT_DIFFERENCING_BLOCK_SIZE : DEFAULT_BLOCK_SIZE);
  const invalid = (message: string): DiskchainError => new DiskchainError('INVALID_ARGUMENT', message, { file });
  if (parent && parent.identity.format !== 'vhdx') throw invalid('a VHDX differencing disk needs a VHDX parent');
  if (parent && options.diskType !== 'differencing') throw invalid('a disk with a parent must be of type differencing');
  if (!parent && options.diskType === 'differencing') throw invalid('a differencing disk needs a parent');
  if (logicalSectorSize !== 512 && logicalSectorSize !== 4096) throw invalid(`logical sector size ${logicalSectorSize} is neither 512 nor 4096`);
  if (physicalSectorSize !== 512 && physicalSectorSize !== 4096) throw invalid(`physical sector size ${physicalSectorSize} is neither 512 nor 4096`);
  if (!validBlockSize(blockSize)) throw invalid(`block size ${blockSize} is not a power of two from 1 MiB to 256 MiB`);
  if (!Number.isSafeInteger(virtualSize) || virtualSize <= 0 || virtualSize > MAX_VIRTUAL_SIZE || virtualSize % logicalSectorSize !== 0) {
    throw invalid(`virtual size ${virtualSize} must be a multiple of ${logicalSectorSize} from 1 sector to 64 TiB`);
  }
  if ((await source.size()) !== 0) throw invalid('target is not empty');

  const fixed = options.diskType === 'fixed';
  const bat = new BatLayout(virtualSize, blockSize, logicalSectorSize, parent !== undefined);
  const batLength = bat.regionLength();
  const dataStart = BAT_OFFSET + batLength;

  await source.write(encodeFileIdentifier({ creator: CREATOR }), 0);
  const dataWriteGuid = randomGuid();
  const header = { fileWriteGuid: randomGuid(), dataWriteGuid, logGuid: NULL_GUID, logVersion: 0, version: 1, logLength: LOG_LENGTH, logOffset: LOG_OFFSET };
  await source.write(encodeHeader({ ...header, sequenceNumber: 1n }), HEADER_OFFSETS[0]);
  await source.write(encodeHeader({ ...header, sequenceNumber: 2n }), HEADER_OFFSETS[1]);
  const regions = encodeRegionTable([
    { guid: BAT_REGION_GUID, fileOffset: BAT_OFFSET, length: batLength, required: true },
    { guid: METADATA_REGION_GUID, fileOffset: METADATA_OFFSET, length: METADATA_LENGTH, required: true },
  ]);
  for (const at of REGION_TABLE_OFFSETS) await source.write(regions, at);
  // The log is written out (not left sparse) so a later commit never needs new space.
  await writeZeros(source, LOG_OFFSET, LOG_LENGTH);

  const items: [Omit<MetadataEntry, 'offset' | 'length'>, Uint8Array][] = [
    [{ itemId: FILE_PARAMETERS_GUID, isUser: false, isVirtualDisk: false, isRequired: true }, encodeFileParameters({ blockSize, leaveBlockAllocated: fixed, hasParent: parent !== undefined })],
    [{ itemId: VIRTUAL_DISK_SIZE_GUID, isUser: false, isVirtualDisk: true, isRequired: true }, encodeU64(virtualSize)],
    [{ itemId: PAGE_83_DATA_GUID, isUser: false, isVirtualDisk: true, isRequired: true }, encodeGuidItem(parent?.parentDiskId ?? randomGuid())],
    [{ itemId: LOGICAL_SECTOR_SIZE_GUID, isUser: false, isVirtualDisk: true, isRequired: true }, encodeU32(logicalSectorSize)],
    [{ itemId: PHYSICAL_SECTOR_SIZE_GUID, isUser: false, isVirtualDisk: true, isRequired: true }, encodeU32(physicalSectorSize)],
  ];
  if (parent?.identity.format === 'vhdx') {
    // absolute_win32_path only when the path is one Windows can follow (see win32-path.ts); the spec makes it optional.
    const entries: [string, string][] = [['parent_linkage', formatLinkage(parent.identity.dataWriteGuid)], ['relative_path', parent.relativePath]];
    if (isWin32Absolute(parent.absolutePath)) entries.push(['absolute_win32_path', parent.absolutePath]);
    items.push([{ itemId: PARENT_LOCATOR_GUID, isUser: false, isVirtualDisk: false, isRequired: true }, encodeParentLocator({ locatorType: VHDX_LOCATOR_TYPE_GUID, entries })]);
  }
  await writeMetadataRegion(source, items);

  if (fixed) {
    // Every payload block FULLY_PRESENT, in order after the BAT, and written out (allocated) in full.
    const page = new Uint8Array(MIB);
    let pageStart = 0;
    for (let block = 0; block < bat.payloadBlocks; block++) {
      const at = bat.payloadIndex(block) * 8;
      if (at >= pageStart + MIB) {
        await source.write(page, BAT_OFFSET + pageStart);
        page.fill(0);
        pageStart += MIB;
      }
      encodeBatEntry(page, at - pageStart, { state: PAYLOAD_BLOCK_FULLY_PRESENT, fileOffset: dataStart + block * blockSize });
    }
    await source.write(page, BAT_OFFSET + pageStart);
    await writeZeros(source, dataStart, bat.payloadBlocks * blockSize, options);
  } else {
    await source.truncate(dataStart);
  }
  await source.flush();
  return openVhdx(source, { writable: true });
}

async function writeMetadataRegion(source: ByteSource, items: [Omit<MetadataEntry, 'offset' | 'length'>, Uint8Array][]): Promise<void> {
  const region = new Uint8Array(METADATA_LENGTH);
  const entries: MetadataEntry[] = [];
  let cursor = METADATA_TABLE_SIZE;
  for (const [entry, data] of items) {
    region.set(data, cursor);
    entries.push({ ...entry, offset: cursor, length: data.length });
    cursor += data.length;
  }
  region.set(encodeMetadataTable(entries), 0);
  await source.write(region, METADATA_OFFSET);
}
