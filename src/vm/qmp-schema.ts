/**
 * The part of QEMU's QMP schema diskchain uses, transcribed with the schema's names from QEMU 7.2's
 * qapi/*.json (the file is named on each type). Only the members we read are listed; QEMU may send
 * more.
 */

/** qapi/run-state.json RunState. "io-error" is a VM paused by a disk error (werror=stop/enospc). */
export type RunState =
  | 'debug'
  | 'inmigrate'
  | 'internal-error'
  | 'io-error'
  | 'paused'
  | 'postmigrate'
  | 'prelaunch'
  | 'finish-migrate'
  | 'restore-vm'
  | 'running'
  | 'save-vm'
  | 'shutdown'
  | 'suspended'
  | 'watchdog'
  | 'guest-panicked'
  | 'colo';

/** qapi/run-state.json StatusInfo (query-status). */
export interface StatusInfo {
  running: boolean;
  status: RunState;
}

/** qapi/migration.json MigrationStatus. */
export type MigrationStatus =
  | 'none'
  | 'setup'
  | 'cancelling'
  | 'cancelled'
  | 'active'
  | 'postcopy-active'
  | 'postcopy-paused'
  | 'postcopy-recover'
  | 'completed'
  | 'failed'
  | 'colo'
  | 'pre-switchover'
  | 'device'
  | 'wait-unplug';

/** qapi/migration.json MigrationStats (the "ram" member of MigrationInfo). */
export interface MigrationStats {
  transferred: number;
  total: number;
  duplicate: number;
  normal: number;
}

/** qapi/migration.json MigrationInfo (query-migrate). */
export interface MigrationInfo {
  status?: MigrationStatus;
  ram?: MigrationStats;
  'total-time'?: number;
  downtime?: number;
  'error-desc'?: string;
}

/** qapi/block-core.json BlockDeviceIoStatus: "nospace" is the Paused-Critical cause. */
export type BlockDeviceIoStatus = 'ok' | 'failed' | 'nospace';

/** qapi/block.json BlockInfo (query-block), reduced. */
export interface BlockInfo {
  device: string;
  qdev?: string;
  locked: boolean;
  'io-status'?: BlockDeviceIoStatus;
  inserted?: { file: string; 'node-name'?: string; ro: boolean; drv: string };
}

/** qapi/char.json ChardevInfo (query-chardev). */
export interface ChardevInfo {
  label: string;
  filename: string;
  'frontend-open': boolean;
}

/** qapi/control.json VersionInfo, as the greeting and query-version give it. */
export interface VersionInfo {
  qemu: { major: number; minor: number; micro: number };
  package: string;
}

/** qapi/migration.json MigrationParameters members we set (migrate-set-parameters). */
export interface MigrateSetParameters {
  'max-bandwidth'?: number;
  'downtime-limit'?: number;
}

/** The commands diskchain sends, each with its arguments and its "return" value. */
export interface QmpCommands {
  qmp_capabilities: { args: undefined; ret: Record<string, never> };
  'query-version': { args: undefined; ret: VersionInfo };
  'query-status': { args: undefined; ret: StatusInfo };
  'query-block': { args: undefined; ret: BlockInfo[] };
  'query-chardev': { args: undefined; ret: ChardevInfo[] };
  'query-migrate': { args: undefined; ret: MigrationInfo };
  /** qapi/misc.json: pause every vCPU; pending guest I/O is drained first. */
  stop: { args: undefined; ret: Record<string, never> };
  /** qapi/misc.json: resume (also after io-error, retrying the failed request, and after postmigrate). */
  cont: { args: undefined; ret: Record<string, never> };
  quit: { args: undefined; ret: Record<string, never> };
  /** qapi/run-state.json: press the ACPI power button. */
  system_powerdown: { args: undefined; ret: Record<string, never> };
  system_reset: { args: undefined; ret: Record<string, never> };
  migrate: { args: { uri: string }; ret: Record<string, never> };
  'migrate-incoming': { args: { uri: string }; ret: Record<string, never> };
  'migrate-set-parameters': { args: MigrateSetParameters; ret: Record<string, never> };
}

/** qapi/block-core.json BLOCK_IO_ERROR. With werror=enospc and nospace=true the VM is paused. */
export interface BlockIoErrorData {
  device: string;
  'node-name'?: string;
  operation: 'read' | 'write';
  action: 'ignore' | 'report' | 'stop';
  nospace?: boolean;
  reason: string;
}

/** qapi/run-state.json SHUTDOWN. */
export interface ShutdownData {
  guest: boolean;
  reason: string;
}

/** Every event arrives in this envelope (qmp-spec §2.5). */
export interface QmpEvent<D = Record<string, unknown>> {
  event: string;
  data: D;
  timestamp: { seconds: number; microseconds: number };
}
