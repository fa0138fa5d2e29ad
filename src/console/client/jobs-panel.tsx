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
            <span>{job.phase ?? (job.progress ? `${percent(job)} · ${progressText(job)}` : 'starting')}</span>
            <button type="button" class="small" onClick={cancel} aria-label={`Cancel ${job.title}`}>
              Cancel
            </button>
          </div>
        </>
      )}
      {job.state !== 'running' && <div class="job-meta muted">{when(job.finished)}</div>}
      {job.state === 'done' && <JobResult job={job} />}
      {(job.state === 'failed' || job.state === 'cancelled') && <ErrorNote error={job.error} label={`${job.title} failed`} />}
      <ErrorNote error={error} />
    </li>
  );
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

/** One line that says what the job did. */
function JobResult({ job }: { job: JobView }) {
  const r = job.result as Record<string, unknown> | null;
  if (!r) return null;
  let text: string | null = null;
  if (job.kind === 'scan') {
    const s = r.summary as { disks: number; trees: number; consistent: boolean } | undefined;
    if (s) text = `${s.disks} disk(s) in ${s.trees} tree(s)${s.consistent ? ', consistent' : ', with findings'}`;
  } else if (job.kind === 'merge' && typeof r.target === 'string') {
    text = `merged into ${r.target}, ${bytes(r.bytesCopied as number)} copied`;
  } else if (job.kind === 'convert' && typeof r.bytesWritten === 'number') {
    text = `${bytes(r.bytesWritten)} written`;
  } else if (job.kind === 'reparent' && typeof r.parent === 'string') {
    text = `now points at ${r.parent}`;
  }
  return text ? <p class="job-result">{text}</p> : null;
}
