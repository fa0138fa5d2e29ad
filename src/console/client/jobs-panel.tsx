// The jobs panel: every job the server holds, newest first; running ones with progress and Cancel,
// finished ones with their outcome. It reads the job stream, so a reloaded page shows the same jobs.
import { useState } from 'preact/hooks';
import { ApiError, cancelJob, jobStore, type ErrorBody, type JobView } from './api.js';
import { bytes, when } from './format.js';
import { useJobs } from './hooks.js';
import { ErrorNote, Progress } from './widgets.js';

const STATE_LABEL: Record<JobView['state'], string> = { running: 'Running', done: 'Done', failed: 'Failed', cancelled: 'Cancelled' };

export function JobsPanel() {
  const jobs = useJobs();
  const running = jobs.filter((j) => j.state === 'running').length;
  return (
    <aside class="jobs" aria-labelledby="jobs-title">
      <header class="jobs-head">
        <h2 id="jobs-title">Jobs</h2>
        <span class="muted">{running > 0 ? `${running} running` : 'none running'}</span>
        {!jobStore.connected && <span class="badge warn" title="reconnecting to the server">offline</span>}
      </header>
      {jobs.length === 0 ? (
        <p class="empty">Long operations (scans, merges, conversions) appear here with their progress. They run in the server: reloading the page does not stop them.</p>
      ) : (
        <ul class="job-list" aria-label="Jobs">
          {jobs.map((j) => (
            <JobCard key={j.id} job={j} />
          ))}
        </ul>
      )}
    </aside>
  );
}

export function JobCard({ job }: { job: JobView }) {
  const [error, setError] = useState<ErrorBody | null>(null);
  const cancel = (): void => {
    cancelJob(job.id).catch((e: unknown) => setError(e instanceof ApiError ? e.body : { code: 'INTERNAL', message: String(e) }));
  };
  return (
    <li class={`job ${job.state}`} aria-label={`${job.title}: ${STATE_LABEL[job.state]}`}>
      <div class="job-top">
        <span class="job-title">{job.title}</span>
        <span class={`badge ${job.state}`}>{STATE_LABEL[job.state]}</span>
      </div>
      {job.state === 'running' && (
        <>
          <Progress done={job.progress?.done ?? 0} total={job.progress?.total ?? 0} label={`Progress of ${job.title}`} />
          <div class="job-meta">
            <span>{runningText(job)}</span>
            <button type="button" class="small" onClick={cancel} aria-label={`Cancel ${job.title}`}>
              Cancel
            </button>
          </div>
        </>
      )}
      {job.state !== 'running' && <div class="job-meta muted">{when(job.finished)}</div>}
      {job.state === 'done' && <JobResult job={job} />}
      {(job.state === 'failed' || job.state === 'cancelled') && <ErrorNote error={job.error} label={`${job.title} ${job.state}`} />}
      <ErrorNote error={error} />
    </li>
  );
}

/** The phase (a merge's copy, handover, ...) and how far it got: "copy · 12% · 128 MiB of 1.0 GiB". */
function runningText(job: JobView): string {
  const parts = [job.phase, job.progress ? `${percent(job)} · ${progressText(job)}` : null].filter((p) => p);
  return parts.length > 0 ? parts.join(' · ') : 'starting';
}

function percent(job: JobView): string {
  const p = job.progress;
  return p && p.total > 0 ? `${Math.floor((p.done / p.total) * 100)}%` : '';
}

function progressText(job: JobView): string {
  const p = job.progress!;
  // Scans count files; the rest count bytes.
  return job.kind === 'scan' ? `${p.done} of ${p.total} disks linked` : `${bytes(p.done)} of ${bytes(p.total)}`;
}

type Named = { name: string };
const quoted = (list: Named[]): string => list.map((c) => `"${c.name}"`).join(', ');

/** What a finished job did, in a line, from its result (null when there is nothing more to say). */
function outcome(job: JobView): string | null {
  const r = job.result as Record<string, any> | null; // eslint-disable-line @typescript-eslint/no-explicit-any
  if (!r) return null;
  switch (job.kind) {
    case 'scan': {
      const s = r.summary as { disks: number; trees: number; consistent: boolean } | undefined;
      return s ? `${s.disks} disk(s) in ${s.trees} tree(s)${s.consistent ? ', consistent' : ', with findings'}` : null;
    }
    case 'merge':
      return typeof r.target === 'string' ? `merged into ${r.target}, ${bytes(r.bytesCopied as number)} copied` : null;
    case 'convert':
      return typeof r.bytesWritten === 'number' ? `${bytes(r.bytesWritten)} written` : null;
    case 'reparent':
      return typeof r.parent === 'string' ? `now points at ${r.parent}` : null;
    case 'checkpoint':
      return r.checkpoint ? `created "${r.checkpoint.name}"${r.running ? ' while the guest ran' : ''}` : null;
    case 'apply':
      return r.applied ? `Now starts from "${r.applied.name}"${r.savedFirst ? `; the old Now is kept as "${r.savedFirst.name}"` : `; ${r.discarded?.length ?? 0} file(s) of the old Now discarded`}` : null;
    case 'remove':
      return Array.isArray(r.removed) ? `removed ${quoted(r.removed)}${r.merged?.length ? `; ${r.merged.length} merge(s)` : ''}${r.running ? ' while the guest ran' : ''}` : null;
    case 'export':
      return typeof r.folder === 'string' ? `exported "${r.checkpoint?.name}" as a new VM in ${r.folder}` : null;
    case 'import':
      return typeof r.folder === 'string' ? `the VM "${r.name}" with ${r.checkpoints?.length ?? 0} checkpoint(s) in ${r.folder}` : null;
    case 'group-checkpoint':
      return Array.isArray(r.checkpoints) ? `${r.checkpoints.length} VMs checkpointed at one instant${typeof r.pauseMs === 'number' && r.pauseMs > 0 ? `; the running guests paused, the longest ${r.pauseMs} ms` : ''}` : null;
    case 'group-remove':
      return Array.isArray(r.vms) ? `the group's checkpoint removed from ${r.vms.length} VMs` : null;
    case 'power':
      return typeof r.state === 'string' ? `the VM is ${r.state}` : null;
    default:
      return null;
  }
}

function JobResult({ job }: { job: JobView }) {
  const text = outcome(job);
  return text ? <p class="job-result">{text}</p> : null;
}
