/** The public library surface of diskchain. */
export { DiskchainError, isDiskchainError, type ErrorCode, type ErrorDetails } from '../io/errors.js';
export type { ByteSource } from '../io/byte-source.js';
export { FileSource } from '../io/file-source.js';
export { MemorySource } from '../io/memory-source.js';
export type {
  CreateOptions,
  DiskType,
  Extent,
  ExtentState,
  Finding,
  FormatDriver,
  FormatName,
  LinkIdentity,
  ParentLocatorEntry,
  ParentReference,
  Severity,
  VirtualDisk,
} from '../formats/types.js';
export { detectFormat, driverFor } from '../formats/registry.js';
export { vhdxDriver } from '../formats/vhdx/driver.js';
export { vhdDriver } from '../formats/vhd/driver.js';
export { rawDriver } from '../formats/raw/driver.js';
export { DiskChain, type ChainExtent, type ChainLink } from '../chain/disk-chain.js';
export { openChain, openDisk, MAX_CHAIN_DEPTH, type OpenChainOptions, type OpenDiskOptions } from '../chain/open-chain.js';
export { locateParent, type LocateAttempt } from '../chain/locate.js';
export { copyChainInto, type CopyResult } from '../ops/convert.js';
export { compareChains, type CompareResult } from '../ops/compare.js';
export type { LongOperationOptions, ProgressCallback } from '../ops/progress.js';
export { checkDisk, type CheckReport } from './check.js';
export { convert, type ConvertOptions } from './convert.js';
export { createChild, createDisk, type CreateChildOptions } from './create.js';
export { inspect, type DiskInfo, type ParentInfo } from './info.js';
