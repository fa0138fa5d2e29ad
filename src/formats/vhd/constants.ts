/** Constants of the VHD format ("Virtual Hard Disk Image Format Specification", Microsoft, v1.0, 2006). */

/** VHD addresses everything in 512-byte sectors (spec: Hard Disk Footer Format, Block Allocation Table). */
export const SECTOR = 512;
export const FOOTER_SIZE = 512;
/** Disks made before Virtual PC 2004 end with a 511-byte footer (spec: Hard Disk Footer Format). */
export const OLD_FOOTER_SIZE = 511;
export const DYNAMIC_HEADER_SIZE = 1024;

export const FOOTER_COOKIE = 'conectix';
export const DYNAMIC_HEADER_COOKIE = 'cxsparse';

/** Features field: bit 1 ("reserved") must always be set (spec: Features). */
export const FEATURES_RESERVED = 0x00000002;
export const FEATURES_TEMPORARY = 0x00000001;
/** File Format Version and Header Version: major 1, minor 0. */
export const FORMAT_VERSION = 0x00010000;
export const HEADER_VERSION = 0x00010000;

/** Disk Type field values (spec: Disk Type). */
export const DISK_TYPE_FIXED = 2;
export const DISK_TYPE_DYNAMIC = 3;
export const DISK_TYPE_DIFFERENCING = 4;

/** Data Offset of a fixed disk, and the unused Data Offset of the dynamic header. */
export const NO_OFFSET = 0xffffffffffffffffn;

/** Time stamps count seconds since 2000-01-01 00:00:00 UTC (spec: Time Stamp). */
export const VHD_EPOCH_MS = Date.UTC(2000, 0, 1);

/** The largest disk the spec allows (2040 GiB, the CHS limit 65535*16*255 sectors, rounded as Windows does). */
export const MAX_CREATE_SIZE = 2040 * 1024 ** 3;
/** The largest Current Size we open at all (far above anything real; bounds arithmetic). */
export const MAX_OPEN_SIZE = 2 ** 44;
export const DEFAULT_BLOCK_SIZE = 2 * 1024 * 1024;
export const MIN_BLOCK_SIZE = 512;
export const MAX_BLOCK_SIZE = 256 * 1024 * 1024;
/** Most BAT entries we read into memory (64 MiB of table). */
export const MAX_BAT_ENTRIES = 2 ** 24;
/** Longest parent locator payload we accept (Windows reserves at most 64 KiB). */
export const MAX_LOCATOR_BYTES = 1024 * 1024;

export const CREATOR_APPLICATION = 'dchn';
export const CREATOR_VERSION = 0x00010000;
export const CREATOR_HOST_WINDOWS = 'Wi2k';
