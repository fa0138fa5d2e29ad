// VMs, read-only: the VM folders under the roots (listVms) with their sizes and the space of their file
// systems, one VM described (its checkpoint tree with Now, its disk chains, pending operations), and the
// forecast of an operation before it runs (what it deletes, merges and needs). Nothing here writes:
// every VM is opened without its lock, as `vm show` and `checkpoint list` open it.
import { stat } from 'node:fs/promises';
import type { FastifyInstance } from 'fastify';
import { listVms, openVm, vmStatus, withVm, type OperationForecast, type VmDescription, type VmListEntry, type VmState as RunState, type VmStatus } from '../api/index.js';
import type { Jobs } from './jobs.js';
import { requestSignal, spaceOf, type Space } from './routes-disks.js';
import type { ConsoleContext } from './server.js';

/**
 * What the page shows as a VM's state: the runtime's (Off, Running, Paused, Saved, ...), or Busy while
 * a job of this console works on it, Pending when an interrupted operation waits, Unreadable.
 */
export type VmState = RunState | 'Busy' | 'Pending' | 'Unreadable';

export interface VmRow extends VmListEntry {
  state: VmState;
  /** The runtime's status (null when it could not be read). */
  runtime: VmStatus | null;
  /** Bytes on disk of every file the manifest names (null when unreadable). */
  bytes: number | null;
  /** Index into `spaces`: the file system that holds the VM. */
  space: number;
}

export interface VmsView {
  vms: VmRow[];
  spaces: Space[];
}

export interface VmView {
  vm: VmDescription;
  state: VmState;
  runtime: VmStatus | null;
  space: Space;
}

/**
 * What the pages poll to notice changes made elsewhere (the CLI, a worker that stops or dies): per VM,
 * its state, runtime status and tree shape, read from vm.json and the worker (no disk is opened).
 */
export interface VmPulse {
  folder: string;
  state: VmState;
  runtime: VmStatus | null;
  checkpoints: number;
  nowParent: string | null;
}

export interface ForecastView {
  forecast: OperationForecast;
  space: Space;
}

export const vmPathQuery = { type: 'object', properties: { path: { type: 'string', minLength: 1, maxLength: 4096 } }, required: ['path'], additionalProperties: false } as const;

function stateOf(jobs: Jobs, folder: string, pending: number, unreadable: boolean, runtime: VmStatus | null): VmState {
  if (unreadable) return 'Unreadable';
  if (jobs.list().some((j) => j.state === 'running' && j.locks.includes(folder))) return 'Busy';
  if (runtime && runtime.state !== 'Off') return runtime.state;
  return pending > 0 ? 'Pending' : 'Off';
}

const statusOf = (folder: string): Promise<VmStatus | null> => vmStatus(folder).catch(() => null);

export function registerVmRoutes(app: FastifyInstance, { roots, jobs }: ConsoleContext): void {
  app.get('/api/vms', async (): Promise<VmsView> => {
    const entries = await listVms(roots.paths);
    const spaces: Space[] = [];
    const devices: number[] = [];
    const vms: VmRow[] = [];
    for (const e of entries) {
      const dev = (await stat(e.folder)).dev;
      let space = devices.indexOf(dev);
      if (space < 0) {
        space = devices.push(dev) - 1;
        spaces.push(await spaceOf(e.folder));
      }
      let bytes: number | null = null;
      if (!e.error) bytes = await withVm(e.folder, { lock: 'none', command: 'console' }, async (vm) => (await vm.describe({ reclaim: false })).bytes).catch(() => null);
      const runtime = e.error ? null : await statusOf(e.folder);
      vms.push({ ...e, state: stateOf(jobs, e.folder, e.pending, e.error !== null || bytes === null, runtime), runtime, bytes, space });
    }
    return { vms, spaces };
  });

  // The pulse: the VMs under the roots, or one VM (path); cheap enough to poll every few seconds.
  app.get<{ Querystring: { path?: string } }>(
    '/api/vms/status',
    { schema: { querystring: { ...vmPathQuery, required: [] } } },
    async (req): Promise<{ vms: VmPulse[] }> => {
      const entries = await listVms(req.query.path === undefined ? roots.paths : [await roots.existing(req.query.path)]);
      const vms: VmPulse[] = [];
      for (const e of entries) {
        const runtime = e.error ? null : await statusOf(e.folder);
        vms.push({ folder: e.folder, state: stateOf(jobs, e.folder, e.pending, e.error !== null, runtime), runtime, checkpoints: e.checkpoints, nowParent: e.now?.parent ?? null });
      }
      return { vms };
    },
  );

  app.get<{ Querystring: { path: string } }>('/api/vm', { schema: { querystring: vmPathQuery } }, async (req): Promise<VmView> => {
    const folder = await roots.existing(req.query.path);
    const runtime = await statusOf(folder);
    const vm = await openVm(folder, { lock: 'none', command: 'console' });
    try {
      // Reclaim bytes read every layer's allocation map: not while a job of this console or a running guest writes them.
      const quiet = stateOf(jobs, folder, 0, false, runtime) === 'Off';
      const description = await vm.describe({ reclaim: quiet, signal: requestSignal(req) });
      return { vm: description, state: stateOf(jobs, folder, description.pending.length, false, runtime), runtime, space: await spaceOf(folder) };
    } finally {
      await vm.close();
    }
  });

  app.post<{ Body: { path: string; operation: 'create' | 'apply' | 'remove' | 'export'; checkpoint?: string; checkpointFirst?: boolean; subtree?: boolean; format?: 'vhdx' | 'vhd' | 'raw' } }>(
    '/api/vm/forecast',
    {
      schema: {
        body: {
          type: 'object',
          properties: {
            path: { type: 'string', minLength: 1, maxLength: 4096 },
            operation: { enum: ['create', 'apply', 'remove', 'export'] },
            checkpoint: { type: 'string', minLength: 1, maxLength: 200 },
            checkpointFirst: { type: 'boolean' },
            subtree: { type: 'boolean' },
            format: { enum: ['vhdx', 'vhd', 'raw'] },
          },
          required: ['path', 'operation'],
          additionalProperties: false,
        },
      },
    },
    async (req): Promise<ForecastView> => {
      const b = req.body;
      const folder = await roots.existing(b.path);
      jobs.assertFree([folder]);
      const request =
        b.operation === 'create'
          ? { operation: 'create' as const }
          : b.operation === 'apply'
            ? { operation: 'apply' as const, checkpointFirst: b.checkpointFirst ?? true }
            : b.operation === 'remove'
              ? { operation: 'remove' as const, subtree: b.subtree ?? false }
              : { operation: 'export' as const, ...(b.format ? { format: b.format } : {}) };
      const forecast = await withVm(folder, { lock: 'none', command: 'console' }, (vm) => vm.forecast(b.checkpoint ?? null, request, { signal: requestSignal(req) }));
      return { forecast, space: await spaceOf(folder) };
    },
  );
}
