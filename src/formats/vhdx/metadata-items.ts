import { toSafeNumber, view } from '../../io/binary.js';
import { corrupt, DiskchainError } from '../../io/errors.js';
import { guidToString, writeGuid } from '../../io/guid.js';

/** §2.6.2 The system metadata items. */
export const FILE_PARAMETERS_GUID = 'caa16737-fa36-4d43-b3b6-33f0aa44e76b';
export const VIRTUAL_DISK_SIZE_GUID = '2fa54224-cd1b-4876-b211-5dbed83bf4b8';
export const PAGE_83_DATA_GUID = 'beca12ab-b2e6-4523-93ef-c309e000c746';
export const LOGICAL_SECTOR_SIZE_GUID = '8141bf1d-a96f-4709-ba47-f233a8faab5f';
export const PHYSICAL_SECTOR_SIZE_GUID = 'cda348c7-445d-4471-9cc9-e9885251c556';
export const PARENT_LOCATOR_GUID = 'a8d35f2d-b30b-454d-abf7-d3d84834ab0c';

export const KNOWN_ITEMS = new Set([
  FILE_PARAMETERS_GUID,
  VIRTUAL_DISK_SIZE_GUID,
  PAGE_83_DATA_GUID,
  LOGICAL_SECTOR_SIZE_GUID,
  PHYSICAL_SECTOR_SIZE_GUID,
  PARENT_LOCATOR_GUID,
]);

export const MIB = 1024 * 1024;
/** §2.6.2.2 the largest virtual disk: 64 TiB. */
export const MAX_VIRTUAL_SIZE = 64 * 1024 * 1024 * MIB;
export const MIN_BLOCK_SIZE = MIB;
export const MAX_BLOCK_SIZE = 256 * MIB;

export interface FileParameters {
  blockSize: number;
  leaveBlockAllocated: boolean;
  hasParent: boolean;
}

/** §2.6.2.1 File Parameters. */
export function decodeFileParameters(buf: Uint8Array, file: string, offset: number): FileParameters {
  expectLength(buf, 8, 'file parameters', file, offset);
  const dv = view(buf);
  const blockSize = dv.getUint32(0, true);
  if (!validBlockSize(blockSize)) {
    throw corrupt(`block size ${blockSize} is not a power of two from 1 MiB to 256 MiB`, file, offset);
  }
  const flags = dv.getUint32(4, true);
  return { blockSize, leaveBlockAllocated: (flags & 1) !== 0, hasParent: (flags & 2) !== 0 };
}

export function validBlockSize(n: number): boolean {
  return n >= MIN_BLOCK_SIZE && n <= MAX_BLOCK_SIZE && (n & (n - 1)) === 0;
}

export function encodeFileParameters(p: FileParameters): Uint8Array {
  const buf = new Uint8Array(8);
  const dv = view(buf);
  dv.setUint32(0, p.blockSize, true);
  dv.setUint32(4, (p.leaveBlockAllocated ? 1 : 0) | (p.hasParent ? 2 : 0), true);
  return buf;
}

/** §2.6.2.2 Virtual Disk Size. */
export function decodeVirtualDiskSize(buf: Uint8Array, logicalSectorSize: number, file: string, offset: number): number {
  expectLength(buf, 8, 'virtual disk size', file, offset);
  const size = toSafeNumber(view(buf).getBigUint64(0, true), 'virtual disk size', file, offset);
  if (size === 0 || size > MAX_VIRTUAL_SIZE || size % logicalSectorSize !== 0) {
    throw corrupt(`virtual disk size ${size} is not a non-zero multiple of ${logicalSectorSize} up to 64 TiB`, file, offset);
  }
  return size;
}

export function encodeU64(n: number): Uint8Array {
  const buf = new Uint8Array(8);
  view(buf).setBigUint64(0, BigInt(n), true);
  return buf;
}

/** §2.6.2.3 / §2.6.2.4 sector sizes: 512 or 4096. */
export function decodeSectorSize(buf: Uint8Array, what: string, file: string, offset: number): number {
  expectLength(buf, 4, what, file, offset);
  const n = view(buf).getUint32(0, true);
  if (n !== 512 && n !== 4096) throw corrupt(`${what} ${n} is neither 512 nor 4096`, file, offset);
  return n;
}

export function encodeU32(n: number): Uint8Array {
  const buf = new Uint8Array(4);
  view(buf).setUint32(0, n, true);
  return buf;
}

/** §2.6.2.5 Page 83 Data: the virtual disk id, a GUID. */
export function decodePage83(buf: Uint8Array, file: string, offset: number): string {
  expectLength(buf, 16, 'page 83 data', file, offset);
  return guidToString(buf, 0);
}

export function encodeGuidItem(guid: string): Uint8Array {
  const buf = new Uint8Array(16);
  writeGuid(buf, 0, guid);
  return buf;
}

function expectLength(buf: Uint8Array, n: number, what: string, file: string, offset: number): void {
  if (buf.length < n) throw new DiskchainError('CORRUPT', `${what} item is ${buf.length} bytes, expected ${n}`, { file, offset });
}
