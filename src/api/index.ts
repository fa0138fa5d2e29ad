/** The public library surface of diskchain. */
export { DiskchainError, isDiskchainError, type ErrorCode, type ErrorDetails } from '../io/errors.js';
export type { ByteSource } from '../io/byte-source.js';
export { FileSource, setFileWriteMode, type FileWriteMode } from '../io/file-source.js';
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
export { defaultLinkStorePath, linkStorePath, useLinkStore } from '../chain/link-store.js';
export { copyChainInto, type CopyResult } from '../ops/convert.js';
export { compareChains, type CompareResult } from '../ops/compare.js';
export type { LongOperationOptions, ProgressCallback } from '../ops/progress.js';
export { checkDisk, type CheckReport } from './check.js';
export { convert, type ConvertOptions } from './convert.js';
export { createChild, createDisk, type CreateChildOptions } from './create.js';
export { inspect, type DiskInfo, type ParentInfo } from './info.js';
export { catalogFolders, childrenOf, parentCandidates, type Catalog, type CatalogEntry, type CatalogOptions, type CatalogProblem } from '../chain/catalog.js';
export { scanFolders, shellQuote, type PlanStep, type ScanOptions, type ScanReport, type ScanTree, type TreePlan } from '../ops/scan.js';
export { merge, type MergeOptions, type MergeResult } from '../ops/merge.js';
export { rebase, type RebaseOptions, type RebaseResult } from '../ops/rebase.js';
export { reparent, type ReparentOptions, type ReparentResult } from '../ops/reparent.js';
export { resize, type ResizeCallOptions, type ResizeResult } from './resize.js';
export { measureChain, type Measure, type MergeMeasure } from '../ops/measure.js';
export { hashChain } from '../ops/hash.js';
export { resolveParent, type ParentSearchOptions, type ResolvedParent } from '../chain/resolve-parent.js';
export type { ParentLinkUpdate } from '../formats/types.js';
export {
  openVm,
  withVm,
  createVm,
  importVm,
  listVms,
  groupCheckpoint,
  groupRemove,
  VirtualMachine,
  type OpenVmOptions,
  type CreateVmOptions,
  type CreatedVm,
  type ImportVmOptions,
  type ImportedVm,
  type VmListEntry,
  type VmDescription,
  type CheckpointInfo,
  type CheckpointOptions,
  type ApplyOptions,
  type ApplyResult,
  type RemoveOptions,
  type RemoveResult,
  type ExportOptions,
  type ExportResult,
  type CheckOptions,
  type VmCheckReport,
  type VmFinding,
  type GroupCheckpointOptions,
  type GroupCheckpointResult,
  type GroupRemoveResult,
  type Manifest,
  type RecoveryReport,
  type Transaction,
  type OperationForecast,
  type OperationRequest,
} from './vm.js';
export { startVm, stopVm, saveVm, pauseVm, resumeVm, vmStatus, runWorkerProcess, checkpointVm, applyVm, type CheckpointVmResult, type ApplyVmResult, type LiveCheckpointResult, type LiveApplyResult, type StartVmOptions, type StopOptions, type VmStatus, type VmState, type WorkerProcessOptions } from './vm-runtime.js';
export { MAX_NAME_LENGTH } from '../checkpoint/manifest.js';
export { serveVm, type ServeVmOptions } from './serve-vm.js';
export { removeVm, type RemoveVmResult, type LiveRemoveProgress } from './vm-remove.js';
export { serve, NBD_PORT, type ServeHandle, type ServeOptions } from './serve.js';
export { NbdServer, type ListenOptions, type NbdServerOptions, type ServerAddress, type TlsOptions } from '../server/server.js';
export { NbdExport, type ExportOptions as NbdExportOptions } from '../server/export.js';
export { ChainBackend, type AllocationExtent, type ExportBackend } from '../server/backend.js';
export { SerialGate, type WriteGate } from '../server/write-gate.js';
export type { ServerLimits } from '../server/connection.js';
