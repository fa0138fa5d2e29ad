// Recovery: scan a folder (a job), see the trees, orphans and mismatches `scan` finds, and run the
// recovery plan one step at a time (each step a job: merge, reparent, convert), in order.
import { useState } from 'preact/hooks';
import { api, ApiError, jobStore, query, type ErrorBody, type JobView } from './api.js';
import type { ScanReport, ScanTree, TreePlan } from '../../api/index.js';
import { baseName, bytes, dirName, folderNameOf, MAX_NAME, nameProblem, when } from './format.js';
import { go, useJobs, useLoad, usePost, type Route } from './hooks.js';
import { JobCard } from './jobs-panel.js';
import { Empty, ErrorNote, FieldNote } from './widgets.js';

interface RecoveryState {
  scan: string;
  report: ScanReport;
  next: number[];
  running: Array<number | null>;
}

export function RecoveryPage({ route }: { route: Route }) {
  const scanId = route.params.get('scan');
  const jobs = useJobs();
  const scanJob = jobs.find((j) => j.id === scanId);
  const stepJobs = jobs.filter((j) => j.about.scan === scanId && j.kind !== 'scan');
  // Reload the plan's state whenever one of its steps changes state.
  const key = scanJob?.state === 'done' ? `${scanId}:${stepJobs.map((j) => j.state).join(',')}` : null;
  const state = useLoad(key, (signal) => api.get<RecoveryState>(`/api/recovery/${encodeURIComponent(scanId!)}`, signal));
  return (
    <section aria-labelledby="recovery-title">
      <header class="page-head">
        <div>
          <h1 id="recovery-title">Recovery</h1>
          <p class="muted">Scan a folder of disks Hyper-V left behind: trees rebuilt by identity, broken links, and a plan to run step by step. Scanning changes nothing.</p>
        </div>
      </header>
      <ScanForm initial={route.params.get('folder') ?? (scanJob?.about.folder as string | undefined) ?? ''} />
      {scanId && !scanJob && jobStore.connected && <Empty>That scan is gone (the console was restarted): scan again.</Empty>}
      {scanJob && scanJob.state !== 'done' && (
        <ul class="job-list inline" aria-label="Scan">
          <JobCard job={scanJob} />
        </ul>
      )}
      <ErrorNote error={state.error?.body} />
      {state.data && <Report state={state.data} stepJobs={stepJobs} />}
    </section>
  );
}

function ScanForm({ initial }: { initial: string }) {
  const [folder, setFolder] = useState(initial);
  const [browsing, setBrowsing] = useState(false);
  const [error, setError] = useState<ErrorBody | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event): Promise<void> => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const { job } = await api.post<{ job: JobView }>('/api/recovery/scan', { path: folder });
      jobStore.put(job);
      go('recovery', { folder: job.about.folder as string, scan: job.id });
    } catch (err) {
      setError(err instanceof ApiError ? err.body : { code: 'INTERNAL', message: String(err) });
    } finally {
      setBusy(false);
    }
  };
  return (
    <form class="card scan-form" onSubmit={submit} aria-label="Scan a folder">
      <label for="scan-folder">Folder</label>
      <div class="row">
        <input id="scan-folder" type="text" value={folder} placeholder="/path/under/a/root" spellcheck={false} onInput={(e) => setFolder((e.target as HTMLInputElement).value)} />
        <button type="button" onClick={() => setBrowsing(!browsing)} aria-expanded={browsing}>
          Browse…
        </button>
        <button type="submit" class="primary" disabled={busy || folder.trim() === ''}>
          Scan
        </button>
      </div>
      {browsing && <FolderBrowser start={folder} onPick={(p) => setFolder(p)} />}
      <ErrorNote error={error} label="Scan refused" />
    </form>
  );
}

interface Browse {
  path: string;
  parent: string | null;
  folders: string[];
  files: string[];
}

function FolderBrowser({ start, onPick }: { start: string; onPick: (path: string) => void }) {
  const [at, setAt] = useState<string | undefined>(start || undefined);
  const view = useLoad(`browse:${at ?? ''}`, (signal) => api.get<Browse>(query('/api/browse', { path: at }), signal));
  const open = (p: string): void => {
    setAt(p);
    onPick(p);
  };
  return (
    <div class="browser" aria-label="Folders">
      <ErrorNote error={view.error?.body} />
      {view.data && (
        <>
          <div class="browser-path">
            <code>{view.data.path}</code> <span class="muted">({view.data.files.length} file(s))</span>
          </div>
          <ul class="plain browser-list">
            {view.data.parent && (
              <li>
                <button type="button" class="link" onClick={() => open(view.data!.parent!)}>
                  ↑ up
                </button>
              </li>
            )}
            {view.data.folders.map((f) => (
              <li key={f}>
                <button type="button" class="link" onClick={() => open(`${view.data!.path}/${f}`)}>
                  {f}/
                </button>
              </li>
            ))}
          </ul>
        </>
      )}
    </div>
  );
}

function Report({ state, stepJobs }: { state: RecoveryState; stepJobs: JobView[] }) {
  const r = state.report;
  const s = r.summary;
  return (
    <>
      <div class="stats" role="list" aria-label="Scan summary">
        <Stat label="Disks" value={s.disks} />
        <Stat label="Trees" value={s.trees} />
        <Stat label="Orphans" value={s.orphans} bad={s.orphans > 0} />
        <Stat label="Mismatches" value={s.identityMismatches} bad={s.identityMismatches > 0} />
        <Stat label="Stale links" value={s.staleLinks} bad={s.staleLinks > 0} />
        <Stat label="Problems" value={s.problems + s.cycles} bad={s.problems + s.cycles > 0} />
      </div>
      <p class="muted small">Paths below are relative to {r.folders.join(', ')}.</p>
      {r.trees.map((t, i) => (
        <TreeCard key={t.root} tree={t} index={i} plan={r.plan[i]!} state={state} stepJobs={stepJobs.filter((j) => j.about.tree === i)} />
      ))}
      <Findings report={r} />
      <ImportForm state={state} />
    </>
  );
}

function Stat({ label, value, bad }: { label: string; value: number; bad?: boolean }) {
  return (
    <div class={`stat${bad ? ' bad' : ''}`} role="listitem" aria-label={`${label}: ${value}`}>
      <span class="stat-value">{value}</span>
      <span class="stat-label">{label}</span>
    </div>
  );
}

function TreeCard({ tree, index, plan, state, stepJobs }: { tree: ScanTree; index: number; plan: TreePlan; state: RecoveryState; stepJobs: JobView[] }) {
  const byPath = new Map(tree.nodes.map((n) => [n.path, n]));
  const newest = tree.leaves.find((l) => l.newest)?.path;
  const draw = (path: string) => {
    const n = byPath.get(path)!;
    return (
      <li key={path}>
        <div class={`disk-node${path === newest ? ' newest' : ''}`}>
          <span class="disk-name" title={path}>{baseName(path)}</span>
          <span class="muted">
            {n.type}, {bytes(n.fileSize)} file, {when(n.mtime)}
          </span>
          {path === newest && <span class="badge accent">newest leaf</span>}
          {n.dirtyLog && <span class="badge warn">dirty log</span>}
          {n.duplicateOf && <span class="badge neutral">copy of {baseName(n.duplicateOf)}</span>}
        </div>
        {n.children.length > 0 && <ul>{n.children.map(draw)}</ul>}
      </li>
    );
  };
  return (
    <div class="card" aria-label={`Tree ${index + 1}`}>
      <div class="card-head">
        <h2>
          Tree {index + 1}: {tree.format.toUpperCase()}, {tree.nodes.length} disk(s)
        </h2>
        <span class="muted">{bytes(tree.bytes)} on disk</span>
        {!tree.complete && <span class="badge bad">incomplete</span>}
      </div>
      <ul class="disk-tree">{draw(tree.root)}</ul>
      <PlanView plan={plan} tree={index} state={state} stepJobs={stepJobs} />
    </div>
  );
}

function PlanView({ plan, tree, state, stepJobs }: { plan: TreePlan; tree: number; state: RecoveryState; stepJobs: JobView[] }) {
  const [errors, setErrors] = useState<Record<number, ErrorBody>>({});
  const next = state.next[tree] ?? 0;
  const run = async (step: number): Promise<void> => {
    setErrors((e) => ({ ...e, [step]: undefined as unknown as ErrorBody }));
    try {
      const { job } = await api.post<{ job: JobView }>('/api/recovery/step', { scan: state.scan, tree, step });
      jobStore.put(job);
    } catch (err) {
      setErrors((e) => ({ ...e, [step]: err instanceof ApiError ? err.body : { code: 'INTERNAL', message: String(err) } }));
    }
  };
  return (
    <div class="plan">
      <h3>Plan{plan.action !== 'none' ? `: ${plan.action === 'merge' ? 'merge the chain into its base' : 'convert each leaf to a standalone disk'}` : ''}</h3>
      {plan.notes.length > 0 && (
        <ul class="notes">
          {plan.notes.map((n, i) => (
            <li key={i}>{relative(n, state.report.folders)}</li>
          ))}
        </ul>
      )}
      {plan.steps.length === 0 ? (
        <p class="muted">Nothing to run.</p>
      ) : (
        <ol class="steps" aria-label={`Steps of tree ${tree + 1}`}>
          {plan.steps.map((s, i) => {
            const job = stepJobs.filter((j) => j.about.step === i).sort((a, b) => (a.started < b.started ? 1 : -1))[0];
            const status = i < next ? 'done' : job?.state === 'running' ? 'running' : i === next ? 'ready' : 'waiting';
            return (
              <li key={i} class={`step ${status}`} aria-label={`Step ${i + 1}: ${status}`}>
                <div class="step-body">
                  <p>{relative(s.reason, state.report.folders)}</p>
                  <code class="command">{plan.commands[i]}</code>
                  {job && (job.state !== 'done' || i < next) && (
                    <ul class="job-list inline" aria-label={`Job of step ${i + 1}`}>
                      <JobCard job={job} />
                    </ul>
                  )}
                  <ErrorNote error={errors[i]} label={`Step ${i + 1} refused`} />
                </div>
                <div class="step-action">
                  {status === 'done' && <span class="badge done">Done</span>}
                  {status === 'ready' && (
                    <button type="button" class="primary" onClick={() => void run(i)}>
                      Run step {i + 1}
                    </button>
                  )}
                  {status === 'waiting' && <span class="muted">after step {i}</span>}
                </div>
              </li>
            );
          })}
        </ol>
      )}
      {plan.result && next >= plan.steps.length && plan.steps.length > 0 && (
        <p class="ok-note">
          Done: <code>{plan.result}</code> holds the newest state as one standalone disk.
        </p>
      )}
    </div>
  );
}

/** Text with the scanned folders' prefix taken off its paths (the commands keep them whole). */
function relative(text: string, folders: string[]): string {
  return folders.reduce((t, f) => t.split(`${f}/`).join(''), text);
}

function Findings({ report: r }: { report: ScanReport }) {
  if (r.orphans.length + r.identityMismatches.length + r.staleLinks.length + r.problems.length + r.cycles.length === 0) return null;
  return (
    <div class="card warn-card">
      <h2>Findings</h2>
      {r.orphans.length > 0 && (
        <>
          <h3>Orphans: parent not found by identity</h3>
          <ul class="plain">
            {r.orphans.map((o) => (
              <li key={o.path}>
                <code>{o.path}</code>
                <ul class="sub">
                  {o.targets.map((t) => (
                    <li key={t.key + t.path}>
                      tried <code>{t.path}</code> ({t.state})
                    </li>
                  ))}
                </ul>
              </li>
            ))}
          </ul>
        </>
      )}
      {r.identityMismatches.length > 0 && (
        <>
          <h3>Mismatches: a stored path leads to a different disk</h3>
          <ul class="plain">
            {r.identityMismatches.map((m) => (
              <li key={m.child + m.key}>
                <code>{baseName(m.child)}</code> → <code>{baseName(m.found)}</code>, not its parent{m.candidate ? <>; fits by identity: <code>{baseName(m.candidate)}</code></> : '; no scanned disk fits'}
              </li>
            ))}
          </ul>
        </>
      )}
      {r.staleLinks.length > 0 && (
        <>
          <h3>Stale links: parent found by identity, not by its stored path</h3>
          <ul class="plain">
            {r.staleLinks.map((s) => (
              <li key={s.child}>
                <code>{baseName(s.child)}</code> → <code>{baseName(s.parent)}</code>
              </li>
            ))}
          </ul>
        </>
      )}
      {r.problems.length + r.cycles.length > 0 && (
        <>
          <h3>Problems</h3>
          <ul class="plain">
            {r.problems.map((p) => (
              <li key={p.path}>
                <code>{p.path}</code>: {p.code}: {p.message}
              </li>
            ))}
            {r.cycles.map((c, i) => (
              <li key={i}>cycle: {c.paths.map(baseName).join(' → ')}</li>
            ))}
          </ul>
        </>
      )}
    </div>
  );
}

/** Import the scanned folder as a VM (`vm import`): its trees become the VM's disks, its layers checkpoints. */
function ImportForm({ state }: { state: RecoveryState }) {
  const folder = state.report.folders[0] ?? '';
  const [name, setName] = useState(baseName(folder).slice(0, MAX_NAME));
  const [typedTarget, setTypedTarget] = useState<string | null>(null);
  // The folder follows the name (beside the scanned folder) until it is edited by hand.
  const target = typedTarget ?? `${dirName(folder)}/${folderNameOf(name)}-vm`;
  const [adopt, setAdopt] = useState<'copy' | 'move'>('copy');
  const nameIssue = nameProblem(name);
  const { error, busy, post } = usePost();
  const job = useJobs().filter((j) => j.about.scan === state.scan && j.kind === 'import').sort((a, b) => (a.started < b.started ? 1 : -1))[0];
  const submit = (e: Event): void => {
    e.preventDefault();
    if (!nameIssue) void post('/api/recovery/import', { scan: state.scan, target: target.trim(), adopt, name: name.trim() });
  };
  return (
    <form class="card" onSubmit={submit} aria-label="Import as VM">
      <h2>Import as VM</h2>
      <p class="muted small">
        The trees become the disks of a new VM: the newest leaf is Now, every other layer a checkpoint named by its file time (branches are kept). The disks of several trees must have one shape.
      </p>
      <div class="field">
        <label for="import-name">Name of the new VM</label>
        <input id="import-name" type="text" value={name} aria-invalid={nameIssue ? 'true' : 'false'} aria-describedby="import-name-problem" onInput={(e) => setName((e.target as HTMLInputElement).value)} />
        <FieldNote id="import-name-problem" problem={nameIssue} />
      </div>
      <div class="field">
        <label for="import-target">New VM folder</label>
        <input id="import-target" type="text" value={target} spellcheck={false} onInput={(e) => setTypedTarget((e.target as HTMLInputElement).value)} />
      </div>
      <div class="row">
        <label class="check">
          <input type="radio" name="adopt" checked={adopt === 'copy'} onChange={() => setAdopt('copy')} /> Copy the files (the folder stays as it is)
        </label>
        <label class="check">
          <input type="radio" name="adopt" checked={adopt === 'move'} onChange={() => setAdopt('move')} /> Move them
        </label>
      </div>
      <div class="row">
        <button type="submit" class="primary" disabled={busy || nameIssue !== null || target.trim() === '' || job?.state === 'running'}>
          Import as VM
        </button>
        {job?.state === 'done' && (
          <a href={`#/vm?${new URLSearchParams({ path: job.about.vm as string })}`}>Open the VM</a>
        )}
      </div>
      <ErrorNote error={error} label="Import refused" />
      {job && job.state !== 'done' && (
        <ul class="job-list inline" aria-label="Import">
          <JobCard job={job} />
        </ul>
      )}
    </form>
  );
}
