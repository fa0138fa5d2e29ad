import type { ByteSource } from '../io/byte-source.js';

export type FormatName = 'vhdx' | 'vhd' | 'raw';
export type DiskType = 'fixed' | 'dynamic' | 'differencing';

/**
 * How one layer treats a range of the virtual disk:
 * - data: this layer holds the bytes;
 * - zero: this layer says the range reads as zeros (whatever its parents hold);
 * - transparent: this layer holds nothing; the read falls through to the parent (zeros at the base).
 */
export type ExtentState = 'data' | 'zero' | 'transparent';

export interface Extent {
  offset: number;
  length: number;
  state: ExtentState;
}

/** What a child records to name its parent, and what a disk offers to be named by. */
export type LinkIdentity =
  | { format: 'vhdx'; dataWriteGuid: string }
  | { format: 'vhd'; uniqueId: string; timestamp: number };

/** One place a differencing disk says its parent may be found. */
export interface ParentLocatorEntry {
  /** relative: a path relative to the child's folder; absolute: a full path; volume: a \\?\Volume{..}\ path. */
  kind: 'relative' | 'absolute' | 'volume';
  /** The format's own name for the entry (relative_path, W2ku, ...). */
  key: string;
  path: string;
}

export interface ParentReference {
  locators: ParentLocatorEntry[];
  /** The identity the parent must have. */
  expected: LinkIdentity;
  /** VHDX parent_linkage2, when present (another DataWriteGuid the parent may carry). */
  alternateDataWriteGuid?: string;
}

/** One opened disk file: a single layer, knowing nothing of its parent beyond the reference. */
export interface VirtualDisk {
  readonly format: FormatName;
  readonly path: string;
  readonly diskType: DiskType;
  readonly virtualSize: number;
  readonly logicalSectorSize: number;
  readonly physicalSectorSize: number;
  /** The allocation unit (payload block); for raw, a nominal size for streaming. */
  readonly blockSize: number;
  readonly readOnly: boolean;
  readonly parent: ParentReference | undefined;
  /** What a child must record to name this disk as its parent. */
  identity(): LinkIdentity;
  /** The states of [offset, offset+length), in order, covering it exactly; adjacent equal states merged. */
  map(offset: number, length: number): Promise<Extent[]>;
  /** This layer's own bytes; transparent ranges read as zeros. */
  read(target: Uint8Array, offset: number): Promise<void>;
  /** Writes into this layer; offset and length must be multiples of the logical sector size. */
  write(data: Uint8Array, offset: number): Promise<void>;
  flush(): Promise<void>;
  close(): Promise<void>;
  /** Bytes of the file that hold payload data (allocated blocks). */
  allocatedBytes(): Promise<number>;
  /** The file's size in bytes. */
  fileSize(): Promise<number>;
  /** Format-specific facts for `info`, as plain JSON. */
  details(): Record<string, unknown>;
  /**
   * Differencing disks only: rewrites what the disk records about its parent (locator paths and the
   * identity it expects), crash-safe (VHDX through the log, §2.3). Used by reparent, merge and rebase.
   */
  setParent?(link: ParentLinkUpdate): Promise<void>;
  /**
   * Optional: makes whole blocks that hold no data in this file read as zeros, hiding the parent,
   * without allocating anything (VHDX: PAYLOAD_BLOCK_ZERO, MS-VHDX §2.5.1.1). `offset` is a multiple of
   * `blockSize`, and so is `length` unless the range ends at `virtualSize`. Blocks that hold data are
   * left as they are (the caller writes zeros into them). Returns false, having changed nothing, when
   * this disk may not change block states (a fixed VHDX). Durable at the next flush, like a write.
   */
  zeroBlocks?(offset: number, length: number): Promise<boolean>;
  /**
   * Optional: Resize-VHD. The virtual size becomes `size`: grown space reads as zeros; a shrink is
   * refused (INVALID_ARGUMENT with details.minimumSize) when allocated data lies beyond the new end.
   * Never on a differencing disk (UNSUPPORTED). Crash-safe: the old size or the new one.
   */
  resize?(size: number): Promise<void>;
}

/** What `setParent` writes: the new parent's identity and where to find it. */
export interface ParentLinkUpdate {
  identity: LinkIdentity;
  /** Path of the parent relative to the child's folder, with backslashes. */
  relativePath: string;
  /** Absolute path of the parent. */
  absolutePath: string;
  /** VHDX parent_linkage2: a second DataWriteGuid the parent may carry (set while a merge writes into it). */
  alternateDataWriteGuid?: string;
}

export type Severity = 'error' | 'warning' | 'info';

export interface Finding {
  severity: Severity;
  code: string;
  message: string;
  file: string;
  offset?: number;
}

export interface ParentSpec {
  identity: LinkIdentity;
  virtualSize: number;
  logicalSectorSize: number;
  physicalSectorSize: number;
  /** Path of the parent relative to the child's folder, with backslashes. */
  relativePath: string;
  /** Absolute path of the parent as Windows would write it (C:\...) or as this machine sees it. */
  absolutePath: string;
  /** The parent's unique id (VHD) or virtual disk id (VHDX), when the format records it. */
  parentDiskId?: string;
  parentFileName?: string;
}

export interface CreateOptions {
  diskType: DiskType;
  virtualSize: number;
  blockSize?: number;
  logicalSectorSize?: number;
  physicalSectorSize?: number;
  parent?: ParentSpec;
  signal?: AbortSignal;
  /** Fixed disks: bytes of the data area written so far, out of its length (they are written out in full). */
  onProgress?: (done: number, total: number) => void;
}

export interface OpenOptions {
  /** Open for writing (replays a dirty log into the file). Default: read-only. */
  writable?: boolean;
  /**
   * VHDX: the DataWriteGuid the first write of this session sets (§2.2.2), instead of a random one,
   * so a merge can record it in the child (parent_linkage2) before writing. Ignored by other formats.
   */
  dataWriteGuid?: string;
}

export interface FormatDriver {
  readonly name: FormatName;
  /** True when the content is this format (never decided by file name). */
  probe(source: ByteSource): Promise<boolean>;
  open(source: ByteSource, options?: OpenOptions): Promise<VirtualDisk>;
  create(source: ByteSource, options: CreateOptions): Promise<VirtualDisk>;
  /** Structural validation; never throws on corruption, never writes. */
  check(source: ByteSource): Promise<Finding[]>;
}
