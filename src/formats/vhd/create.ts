import { isPowerOfTwo } from '../../io/binary.js';
import { writeZeros, type ByteSource } from '../../io/byte-source.js';
import { DiskchainError, throwIfAborted } from '../../io/errors.js';
import type { CreateOptions } from '../types.js';
import { batByteLength, emptyBat } from './bat.js';
import {
  CREATOR_APPLICATION, CREATOR_HOST_WINDOWS, CREATOR_VERSION, DEFAULT_BLOCK_SIZE, DISK_TYPE_DIFFERENCING, DISK_TYPE_DYNAMIC,
  DISK_TYPE_FIXED, DYNAMIC_HEADER_SIZE, FEATURES_RESERVED, FOOTER_SIZE, FORMAT_VERSION, MAX_BAT_ENTRIES, MAX_BLOCK_SIZE,
  MAX_CREATE_SIZE, MIN_BLOCK_SIZE, NO_OFFSET, SECTOR,
} from './constants.js';
import { encodeDynamicHeader } from './dynamic-header.js';
import { encodeFooter, vhdTimeStamp } from './footer.js';
import { geometryToWrite } from './geometry.js';
import { encodeLocatorPath, linkLocatorPaths, locatorSpaceFor, parentUnicodeName, type LocatorEntry } from './parent-locator.js';
import { isUniqueIdString, randomUniqueId } from './unique-id.js';

/**
 * Writes a new, empty VHD into `source` (spec: "Creating a ... Hard Disk Image" sections).
 * fixed:    [data: Current Size bytes][footer]
 * dynamic:  [footer copy][dynamic header][BAT][footer]
 * differencing: as dynamic, plus W2ku and W2ru locator data after the BAT.
 * Everything is written, then flushed once; the caller opens the result.
 */
export async function writeNewVhd(source: ByteSource, options: CreateOptions): Promise<void> {
  const file = source.name;
  throwIfAborted(options.signal);
  const bad = (message: string): DiskchainError => new DiskchainError('INVALID_ARGUMENT', message, { file });
  const size = options.virtualSize;
  if (!Number.isSafeInteger(size) || size <= 0 || size % SECTOR !== 0) throw bad(`virtual size ${size} must be a positive multiple of ${SECTOR}`);
  if (size > MAX_CREATE_SIZE) throw bad(`virtual size ${size} exceeds the VHD maximum of 2040 GiB`);
  if ((options.logicalSectorSize ?? SECTOR) !== SECTOR) {
    throw new DiskchainError('UNSUPPORTED', 'VHD disks have 512-byte logical sectors only', { file });
  }
  const diskType = options.diskType;
  const parent = options.parent;
  if (diskType === 'differencing') {
    if (!parent) throw bad('a differencing disk needs a parent');
    if (parent.identity.format !== 'vhd') throw new DiskchainError('UNSUPPORTED', 'a VHD differencing disk needs a VHD parent', { file });
    if (!isUniqueIdString(parent.identity.uniqueId)) throw bad(`parent unique id ${parent.identity.uniqueId} is not a UUID`);
    if (parent.logicalSectorSize !== SECTOR) throw new DiskchainError('UNSUPPORTED', 'the parent has non-512-byte sectors', { file });
    if (parent.virtualSize !== size) throw bad(`a differencing VHD must be the size of its parent (${parent.virtualSize}), not ${size}`);
  } else if (parent) {
    throw bad(`a ${diskType} disk has no parent`);
  }
  const blockSize = options.blockSize ?? DEFAULT_BLOCK_SIZE;
  if (diskType !== 'fixed') {
    if (!isPowerOfTwo(blockSize) || blockSize < MIN_BLOCK_SIZE || blockSize > MAX_BLOCK_SIZE) {
      throw bad(`block size ${blockSize} must be a power of two between ${MIN_BLOCK_SIZE} and ${MAX_BLOCK_SIZE}`);
    }
    if (Math.ceil(size / blockSize) > MAX_BAT_ENTRIES) throw bad(`block size ${blockSize} needs too many BAT entries for ${size} bytes`);
  }
  if ((await source.size()) > 0) await source.truncate(0);

  const footer = encodeFooter({
    features: FEATURES_RESERVED,
    fileFormatVersion: FORMAT_VERSION,
    dataOffset: diskType === 'fixed' ? NO_OFFSET : BigInt(FOOTER_SIZE),
    timeStamp: vhdTimeStamp(),
    creatorApplication: CREATOR_APPLICATION,
    creatorVersion: CREATOR_VERSION,
    creatorHostOs: CREATOR_HOST_WINDOWS,
    originalSize: BigInt(size),
    currentSize: BigInt(size),
    geometry: geometryToWrite(size, CREATOR_APPLICATION),
    diskType: diskType === 'fixed' ? DISK_TYPE_FIXED : diskType === 'dynamic' ? DISK_TYPE_DYNAMIC : DISK_TYPE_DIFFERENCING,
    uniqueId: randomUniqueId(),
    savedState: 0,
  });

  if (diskType === 'fixed') {
    // The data area is written out (allocated) in full, as Hyper-V makes a fixed VHD; the footer follows it.
    await writeZeros(source, 0, size, options);
    await source.write(footer, size);
    await source.flush();
    return;
  }

  const entries = Math.ceil(size / blockSize);
  const tableOffset = FOOTER_SIZE + DYNAMIC_HEADER_SIZE;
  let end = tableOffset + batByteLength(entries);
  const locators: LocatorEntry[] = [];
  const locatorData: Array<[number, Uint8Array]> = [];
  if (parent) {
    // Windows order: W2ku (absolute) then W2ru (relative); Platform Data Space in bytes, as Windows writes it.
    for (const [code, path] of linkLocatorPaths(parent)) {
      const data = encodeLocatorPath(path);
      const space = locatorSpaceFor(data.length);
      locators.push({ platformCode: code, platformDataSpace: space, platformDataLength: data.length, platformDataOffset: BigInt(end) });
      locatorData.push([end, data]);
      end += space;
    }
  }
  const header = encodeDynamicHeader({
    tableOffset,
    maxTableEntries: entries,
    blockSize,
    ...(parent && parent.identity.format === 'vhd'
      ? {
          parentUniqueId: parent.identity.uniqueId,
          parentTimeStamp: parent.identity.timestamp,
          parentUnicodeName: parentUnicodeName(parent.absolutePath),
          parentLocators: locators,
        }
      : {}),
  });
  const image = new Uint8Array(end + FOOTER_SIZE);
  image.set(footer, 0);
  image.set(header, FOOTER_SIZE);
  image.set(emptyBat(entries), tableOffset);
  for (const [at, data] of locatorData) image.set(data, at);
  image.set(footer, end);
  throwIfAborted(options.signal);
  await source.write(image, 0);
  await source.flush();
}
