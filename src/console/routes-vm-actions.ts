// VM actions, each through the same library call as its CLI command (src/api/vm.ts, vm-runtime.ts):
// create a checkpoint and apply (live when the VM runs), remove (or a subtree), rename, export, a group
// checkpoint of several VMs, and start, stop, save, pause and resume.
// Each runs as a job that holds the VM folder (and an export's target), so a second action on the same
// VM is refused with LOCKED before it starts; the engine's own lock (vm.lock) keeps other programs out.
// Rename is instant: it answers directly, after the same LOCKED check.
import type { FastifyInstance } from 'fastify';
import { applyVm, checkpointVm, groupCheckpoint, groupRemove, pauseVm, removeVm, resumeVm, saveVm, startVm, stopVm, withVm } from '../api/index.js';
import type { JobContext } from './jobs.js';
import type { ConsoleContext } from './server.js';
import { checkVmName } from './vm-name.js';

const str = (max: number) => ({ type: 'string', minLength: 1, maxLength: max }) as const;
const PATH = str(4096);
const REF = str(200);
/** Hyper-V's limit is 100 characters; the engine says so (INVALID_ARGUMENT) for longer names. */
const NAME = str(1000);
/** The VMs of a group operation: two or more, each once. */
const PATHS = { type: 'array', items: PATH, minItems: 2, maxItems: 64, uniqueItems: true } as const;

function body(properties: Record<string, object>, required: string[]) {
  return { schema: { body: { type: 'object', properties, required, additionalProperties: false } } } as const;
}

/** A checkpoint as a job's title names it: its name (read from vm.json), else the reference given. */
async function labelOf(folder: string, ref: string): Promise<string> {
  const name = await withVm(folder, { lock: 'none', command: 'console' }, async (vm) => vm.manifest.checkpoints.find((c) => c.id === ref || c.name === ref)?.name).catch(() => undefined);
  return name === undefined ? ref.slice(0, 8) : `"${name}"`;
}

const options = (ctx: JobContext) => ({ signal: ctx.signal, onProgress: ctx.onProgress });

export function registerVmActionRoutes(app: FastifyInstance, { roots, jobs }: ConsoleContext): void {
  app.post<{ Body: { path: string; name?: string } }>('/api/vm/checkpoint', body({ path: PATH, name: NAME }, ['path']), async (req) => {
    const folder = await roots.existing(req.body.path);
    const { name } = req.body;
    const job = jobs.start({
      kind: 'checkpoint',
      title: `Create checkpoint${name ? ` "${name}"` : ''} of ${folder}`,
      locks: [folder],
      about: { vm: folder, action: 'checkpoint' },
      run: (ctx) => checkpointVm(folder, { ...(name ? { name } : {}), signal: ctx.signal }),
    });
    return { job };
  });

  app.post<{ Body: { path: string; checkpoint: string; checkpointFirst: boolean; name?: string } }>(
    '/api/vm/apply',
    body({ path: PATH, checkpoint: REF, checkpointFirst: { type: 'boolean' }, name: NAME }, ['path', 'checkpoint', 'checkpointFirst']),
    async (req) => {
      const folder = await roots.existing(req.body.path);
      const { checkpoint, checkpointFirst, name } = req.body;
      const job = jobs.start({
        kind: 'apply',
        title: `Apply checkpoint ${await labelOf(folder, checkpoint)} to ${folder}${checkpointFirst ? ' (Now saved first)' : ' (Now discarded)'}`,
        locks: [folder],
        about: { vm: folder, checkpoint, action: 'apply' },
        run: (ctx) => applyVm(folder, checkpoint, { checkpointFirst: checkpointFirst ? (name ?? true) : false, ...options(ctx) }),
      });
      return { job };
    },
  );

  app.post<{ Body: { path: string; checkpoint: string; subtree: boolean } }>(
    '/api/vm/remove',
    body({ path: PATH, checkpoint: REF, subtree: { type: 'boolean' } }, ['path', 'checkpoint', 'subtree']),
    async (req) => {
      const folder = await roots.existing(req.body.path);
      const { checkpoint, subtree } = req.body;
      const job = jobs.start({
        kind: 'remove',
        title: `Remove checkpoint ${await labelOf(folder, checkpoint)}${subtree ? ' and its subtree' : ''} from ${folder}`,
        locks: [folder],
        about: { vm: folder, checkpoint, action: subtree ? 'remove-subtree' : 'remove' },
        run: (ctx) => removeVm(folder, checkpoint, { subtree, command: 'console: checkpoint remove', ...options(ctx) }),
      });
      return { job };
    },
  );

  app.post<{ Body: { path: string; checkpoint: string; name: string } }>('/api/vm/rename', body({ path: PATH, checkpoint: REF, name: NAME }, ['path', 'checkpoint', 'name']), async (req) => {
    const folder = await roots.existing(req.body.path);
    jobs.assertFree([folder]);
    const result = await withVm(folder, { command: 'console: checkpoint rename' }, (vm) => vm.rename(req.body.checkpoint, req.body.name));
    return { result };
  });

  app.post<{ Body: { path: string; checkpoint: string; target: string; name?: string; format?: 'vhdx' | 'vhd' | 'raw' } }>(
    '/api/vm/export',
    body({ path: PATH, checkpoint: REF, target: PATH, name: NAME, format: { enum: ['vhdx', 'vhd', 'raw'] } }, ['path', 'checkpoint', 'target']),
    async (req) => {
      const name = checkVmName(req.body.name);
      const folder = await roots.existing(req.body.path);
      const target = await roots.fresh(req.body.target);
      const { checkpoint, format } = req.body;
      const job = jobs.start({
        kind: 'export',
        title: `Export checkpoint ${await labelOf(folder, checkpoint)} to ${target}`,
        // The export reads the VM (its read lock) and creates the target and its staging folder beside it.
        locks: [folder, target, `${target}.diskchain-partial`],
        about: { vm: folder, checkpoint, action: 'export' },
        run: (ctx) => withVm(folder, { lock: 'read', command: 'console: checkpoint export' }, (vm) => vm.export(checkpoint, target, { ...(format ? { format } : {}), ...(name ? { name } : {}), ...options(ctx) })),
      });
      return { job };
    },
  );

  app.post<{ Body: { paths: string[]; name?: string } }>(
    '/api/vms/checkpoint',
    body({ paths: PATHS, name: NAME }, ['paths']),
    async (req) => {
      const folders = await Promise.all(req.body.paths.map((p) => roots.existing(p)));
      const { name } = req.body;
      const job = jobs.start({
        kind: 'group-checkpoint',
        title: `Group checkpoint${name ? ` "${name}"` : ''} of ${folders.length} VMs`,
        locks: folders,
        about: { action: 'group-checkpoint', vms: folders.join('\n') },
        run: (ctx) => groupCheckpoint(folders, { ...(name ? { name } : {}), command: 'console: checkpoint create (group)', ...options(ctx) }),
      });
      return { job };
    },
  );

  app.post<{ Body: { paths: string[]; group: string } }>(
    '/api/vms/checkpoint/remove',
    body({ paths: PATHS, group: { type: 'string', pattern: '^[0-9a-f-]{36}$' } }, ['paths', 'group']),
    async (req) => {
      const folders = await Promise.all(req.body.paths.map((p) => roots.existing(p)));
      const { group } = req.body;
      const job = jobs.start({
        kind: 'group-remove',
        title: `Remove group ${group.slice(0, 8)} from ${folders.length} VMs`,
        locks: folders,
        about: { action: 'group-remove', vms: folders.join('\n'), group },
        run: (ctx) => groupRemove(folders, group, { command: 'console: checkpoint remove (group)', ...options(ctx) }),
      });
      return { job };
    },
  );

  app.post<{ Body: { path: string; action: PowerAction; force?: boolean } }>(
    '/api/vm/power',
    body({ path: PATH, action: { enum: Object.keys(POWER) }, force: { type: 'boolean' } }, ['path', 'action']),
    async (req) => {
      const folder = await roots.existing(req.body.path);
      const { action, force } = req.body;
      const job = jobs.start({
        kind: 'power',
        title: `${POWER[action]} ${folder}${force ? ' (hard stop)' : ''}`,
        locks: [folder],
        about: { vm: folder, action },
        run: () => (action === 'stop' ? stopVm(folder, { force: force ?? false }) : POWER_CALL[action](folder)),
      });
      return { job };
    },
  );
}

type PowerAction = 'start' | 'stop' | 'save' | 'pause' | 'resume';
const POWER: Record<PowerAction, string> = { start: 'Start', stop: 'Stop', save: 'Save', pause: 'Pause', resume: 'Resume' };
const POWER_CALL = { start: (f: string) => startVm(f), save: saveVm, pause: pauseVm, resume: resumeVm, stop: (f: string) => stopVm(f) };
