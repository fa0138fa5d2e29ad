// The recovery page's routes: scan a folder (a job), then run its plan one step at a time, each step a
// job, or import the folder as a VM (importVm, `vm import`: its trees become the VM's disks and checkpoints). The steps are the scan's own (kept here, never taken from the request), run in order, through
// the same library calls as the commands `scan` prints (merge, reparent, convert).
import type { FastifyInstance } from 'fastify';
import { DiskchainError, importVm, scanFolders, type ScanReport } from '../api/index.js';
import type { ConsoleContext } from './server.js';
import { planStepCall } from './recovery-steps.js';
import { checkVmName } from './vm-name.js';

interface ScanState {
  folder: string;
  report: ScanReport;
  /** Per plan (tree): the index of the next step to run. */
  next: number[];
  /** Per plan: the step running now, if any. */
  running: Array<number | null>;
}

const KEEP_SCANS = 20;

export function registerRecoveryRoutes(app: FastifyInstance, { roots, jobs }: ConsoleContext): void {
  const scans = new Map<string, ScanState>();
  const stateOf = (id: string): ScanState => {
    const s = scans.get(id);
    if (!s) throw new DiskchainError('NOT_FOUND', `no finished scan ${id} (scans live until the console stops)`, { scan: id });
    return s;
  };

  app.post<{ Body: { path: string } }>(
    '/api/recovery/scan',
    { schema: { body: { type: 'object', properties: { path: { type: 'string', minLength: 1, maxLength: 4096 } }, required: ['path'], additionalProperties: false } } },
    async (req) => {
      const folder = await roots.existing(req.body.path);
      const job = jobs.start({
        kind: 'scan',
        title: `Scan ${folder}`,
        locks: [],
        about: { folder },
        run: async ({ id, signal, onProgress }) => {
          const report = await scanFolders([folder], { signal, onProgress });
          scans.set(id, { folder, report, next: report.plan.map(() => 0), running: report.plan.map(() => null) });
          for (const old of [...scans.keys()].slice(0, Math.max(0, scans.size - KEEP_SCANS))) scans.delete(old);
          // The report itself is fetched from /api/recovery/<job id>: job events stay small.
          return { scan: id, summary: report.summary };
        },
      });
      return { job };
    },
  );

  app.get<{ Params: { scan: string } }>('/api/recovery/:scan', async (req) => {
    const s = stateOf(req.params.scan);
    return { scan: req.params.scan, report: s.report, next: s.next, running: s.running };
  });

  app.post<{ Body: { scan: string; tree: number; step: number } }>(
    '/api/recovery/step',
    {
      schema: {
        body: {
          type: 'object',
          properties: { scan: { type: 'string', maxLength: 64 }, tree: { type: 'integer', minimum: 0 }, step: { type: 'integer', minimum: 0 } },
          required: ['scan', 'tree', 'step'],
          additionalProperties: false,
        },
      },
    },
    async (req) => {
      const { scan, tree, step } = req.body;
      const s = stateOf(scan);
      const plan = s.report.plan[tree];
      if (!plan) throw new DiskchainError('INVALID_ARGUMENT', `the scan has no plan ${tree}`, { tree });
      const planned = plan.steps[step];
      if (!planned) throw new DiskchainError('INVALID_ARGUMENT', `plan ${tree} has no step ${step}`, { tree, step });
      if (s.running[tree] !== null) throw new DiskchainError('LOCKED', `step ${s.running[tree]! + 1} of this plan is running`, { tree });
      if (step !== s.next[tree]) {
        throw new DiskchainError('INVALID_ARGUMENT', step < s.next[tree]! ? `step ${step + 1} is done already` : `run step ${s.next[tree]! + 1} first: the steps of a plan run in order`, { tree, step });
      }
      const call = await planStepCall(planned.args, roots);
      const nodes = s.report.trees[tree]?.nodes.map((n) => n.path) ?? [];
      s.running[tree] = step;
      try {
        const job = jobs.start({
          kind: call.kind,
          title: call.title,
          locks: [...new Set([...nodes, ...call.locks])],
          about: { scan, tree, step },
          run: async (ctx) => {
            try {
              const result = await call.run(ctx);
              s.next[tree] = step + 1;
              return result;
            } finally {
              s.running[tree] = null;
            }
          },
        });
        return { job };
      } catch (e) {
        s.running[tree] = null;
        throw e;
      }
    },
  );

  app.post<{ Body: { scan: string; target: string; adopt: 'copy' | 'move'; name?: string } }>(
    '/api/recovery/import',
    {
      schema: {
        body: {
          type: 'object',
          properties: {
            scan: { type: 'string', maxLength: 64 },
            target: { type: 'string', minLength: 1, maxLength: 4096 },
            adopt: { enum: ['copy', 'move'] },
            name: { type: 'string', minLength: 1, maxLength: 1000 },
          },
          required: ['scan', 'target', 'adopt'],
          additionalProperties: false,
        },
      },
    },
    async (req) => {
      const { scan, adopt } = req.body;
      const name = checkVmName(req.body.name);
      const s = stateOf(scan);
      const source = await roots.existing(s.folder);
      const target = await roots.fresh(req.body.target);
      const nodes = s.report.trees.flatMap((t) => t.nodes.map((n) => n.path));
      const job = jobs.start({
        kind: 'import',
        title: `Import ${source} as the VM ${target}`,
        // A copy only reads the disks, but no step of the plan may change them meanwhile; a move takes them.
        locks: [...nodes, target],
        about: { scan, action: 'import', vm: target },
        run: ({ signal, onProgress }) => importVm(source, target, { adopt, ...(name ? { name } : {}), command: 'console: vm import', signal, onProgress }),
      });
      return { job };
    },
  );
}
