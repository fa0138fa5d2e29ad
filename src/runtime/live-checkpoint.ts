import type { VmWorker } from './worker.js';

/** Adds the live operations (checkpoint, apply) to a worker's control socket. */
export function registerLiveOperations(_worker: VmWorker): void {}
