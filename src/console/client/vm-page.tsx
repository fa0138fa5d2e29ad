// One VM: the checkpoint tree with Now under its parent, the selected checkpoint's details and actions,
// the disk chains (files, sizes, unnamed layers, pending merges) and the space bar with the forecast of
// the operation in the open dialog. The page reloads the VM whenever one of its jobs settles.
import { useState } from 'preact/hooks';
import type { ForecastView, VmView } from '../routes-vms.js';
import type { VmDescription, VmStatus } from '../../api/index.js';
import { api, query, type JobView } from './api.js';
import { CheckpointTree, NOW, Reclaim } from './checkpoint-tree.js';
import { baseName, bytes, when } from './format.js';
import { useJobs, useLoad, usePost } from './hooks.js';
import { fingerprint, usePulse } from './pulse.js';
import { JobCard } from './jobs-panel.js';
import { ApplyDialog, ExportDialog, RemoveDialog, type ActionKind } from './vm-dialogs.js';
import { StateBadge } from './vms-page.js';
import { Empty, ErrorNote, SpaceBar } from './widgets.js';

type Checkpoint = VmDescription['checkpoints'][number];

export function VmPage({ path }: { path: string }) {
  const jobs = useJobs().filter((j) => j.about.vm === path || String(j.about.vms ?? '').split('\n').includes(path));
  const [renamed, setRenamed] = useState(0);
  const settled = jobs.filter((j) => j.state !== 'running').length;
  const view = useLoad(`${path}:${settled}:${renamed}`, (signal) => api.get<VmView>(query('/api/vm', { path }), signal));
  const d = view.data;
  usePulse(path, d && !view.loading ? fingerprint([{ folder: d.vm.folder, state: d.state, runtime: d.runtime, checkpoints: d.vm.checkpoints.length, nowParent: d.vm.now.parent }]) : null, view.reload);
  const [selected, setSelected] = useState<string | null>(null);
  const [dialog, setDialog] = useState<ActionKind | null>(null);
  const [forecast, setForecast] = useState<{ view: ForecastView; label: string } | null>(null);
  const vm = view.data?.vm;
  const checkpoint = vm?.checkpoints.find((c) => c.id === selected) ?? null;
  const shown = checkpoint ? checkpoint.id : NOW;
  return (
    <section aria-labelledby="vm-title">
      <header class="page-head">
        <div>
          <p class="crumbs">
            <a href="#/vms">VMs</a> /
          </p>
          <h1 id="vm-title">{vm?.name ?? baseName(path)}</h1>
          <p class="muted">
            <code>{path}</code>
            {view.data && (
              <>
                {' '}
                <StateBadge state={view.data.state} reason={view.data.runtime?.reason} /> · {vm!.checkpoints.length} checkpoint(s) · {bytes(vm!.bytes)} on disk · {bytes(vm!.config.memoryBytes)}, {vm!.config.cpus} CPU(s)
              </>
            )}
          </p>
        </div>
        <div class="head-actions">
          {view.data && <Power path={path} view={view.data} jobs={jobs} />}
          <CreateForm path={path} jobs={jobs} />
        </div>
      </header>
      {view.data?.runtime && <RuntimeNote status={view.data.runtime} />}
      <ErrorNote error={view.error?.body} />
      {vm && vm.pending.length > 0 && (
        <div class="card warn-card" role="status">
          {vm.pending.map((p) => (
            <p key={p.transaction}>
              Pending: <strong>{p.operation}</strong> ({p.command}, process {p.pid}, since {when(p.started)}). The next action on this VM finishes or rolls it back.
            </p>
          ))}
        </div>
      )}
      {vm && (
        <div class="vm-grid">
          <div class="card">
            <div class="card-head">
              <h2>Checkpoints</h2>
              <span class="muted small">arrow keys move, Enter selects</span>
            </div>
            {vm.checkpoints.length === 0 && <Empty>No checkpoints yet: Now is the only state.</Empty>}
            <CheckpointTree vm={vm} selected={shown} onSelect={(id) => setSelected(id === NOW ? null : id)} label={`Checkpoints of ${vm.name}`} />
          </div>
          <Details vm={vm} checkpoint={checkpoint} jobs={jobs} onAction={setDialog} onRenamed={() => setRenamed((n) => n + 1)} />
        </div>
      )}
      {view.data && (
        <div class="card">
          <SpaceBar
            space={view.data.space}
            title="File system"
            forecast={forecast ? { bytes: forecast.view.forecast.bytesNeeded, label: forecast.label } : null}
          />
        </div>
      )}
      {vm && <Chains vm={vm} />}
      {vm && checkpoint && dialog && (
        <ActionDialog kind={dialog} vm={vm} checkpoint={checkpoint} onClose={() => setDialog(null)} onForecast={(v, label) => setForecast(v ? { view: v, label } : null)} />
      )}
    </section>
  );
}

function ActionDialog({ kind, ...props }: { kind: ActionKind; vm: VmDescription; checkpoint: Checkpoint; onClose: () => void; onForecast: (f: ForecastView | null, label: string) => void }) {
  if (kind === 'apply') return <ApplyDialog {...props} />;
  if (kind === 'export') return <ExportDialog {...props} />;
  return <RemoveDialog {...props} subtree={kind === 'remove-subtree'} />;
}

/** The newest job of this VM for which `match` holds: running, or its outcome. */
function latest(jobs: JobView[], match: (j: JobView) => boolean): JobView | undefined {
  return jobs.filter(match).sort((a, b) => (a.started < b.started ? 1 : -1))[0];
}

function JobOutcome({ job }: { job: JobView | undefined }) {
  if (!job || job.state === 'done') return null;
  return (
    <ul class="job-list inline" aria-label="Last action">
      <JobCard job={job} />
    </ul>
  );
}

function CreateForm({ path, jobs }: { path: string; jobs: JobView[] }) {
  const [name, setName] = useState('');
  const { error, post } = usePost();
  const submit = async (e: Event): Promise<void> => {
    e.preventDefault();
    if (await post('/api/vm/checkpoint', { path, ...(name.trim() ? { name: name.trim() } : {}) })) setName('');
  };
  return (
    <form class="create-form" onSubmit={submit} aria-label="Create a checkpoint">
      <div class="row">
        <input type="text" aria-label="Checkpoint name" placeholder="name (optional)" title="empty: the VM's name and the date and time" value={name} onInput={(e) => setName((e.target as HTMLInputElement).value)} />
        <button type="submit" class="primary">
          Create checkpoint
        </button>
      </div>
      <ErrorNote error={error} label="Create checkpoint refused" />
      <JobOutcome job={latest(jobs, (j) => j.about.action === 'checkpoint' || j.about.action === 'group-checkpoint')} />
    </form>
  );
}

function Details({ vm, checkpoint: c, jobs, onAction, onRenamed }: { vm: VmDescription; checkpoint: Checkpoint | null; jobs: JobView[]; onAction: (a: ActionKind) => void; onRenamed: () => void }) {
  if (!c) {
    return (
      <div class="card details" aria-label="Details of Now">
        <h2>Now</h2>
        <p class="muted">The running state: the only files written. It derives from {vm.now.parent ? `"${vm.checkpoints.find((x) => x.id === vm.now.parent)?.name}"` : 'no checkpoint'}.</p>
        <dl class="facts">
          <dt>Own bytes</dt>
          <dd>{bytes(vm.now.ownBytes)}</dd>
          {vm.now.disks.map((d) => [<dt key={`t${d.id}`}>{d.id} writes</dt>, <dd key={`d${d.id}`}><code>{d.file}</code></dd>])}
        </dl>
        <p class="muted small">Select a checkpoint in the tree to apply, remove, rename or export it.</p>
      </div>
    );
  }
  const job = latest(jobs, (j) => j.about.checkpoint === c.id);
  const running = job?.state === 'running';
  return (
    <div class="card details" aria-label={`Details of ${c.name}`}>
      <RenameTitle vm={vm} checkpoint={c} onRenamed={onRenamed} />
      <dl class="facts">
        <dt>Created</dt>
        <dd>{when(c.created)}</dd>
        <dt>Type</dt>
        <dd>{c.type}{c.group ? ` (group ${c.group.slice(0, 8)})` : ''}</dd>
        <dt>Own bytes</dt>
        <dd>{bytes(c.ownBytes)}</dd>
        <dt>Removal</dt>
        <dd>{c.reclaimBytes === null ? 'not measured while the VM runs, a job works on it or an operation is pending' : <Reclaim bytes={c.reclaimBytes} />}</dd>
        <dt>Children</dt>
        <dd>{c.children.length + (vm.now.parent === c.id ? 1 : 0)}{vm.now.parent === c.id ? ' (with Now)' : ''}</dd>
        <dt>Id</dt>
        <dd><code>{c.id}</code></dd>
        {c.disks.map((d) => [<dt key={`t${d.id}`}>{d.id} froze</dt>, <dd key={`d${d.id}`}><code>{baseName(d.file)}</code></dd>])}
      </dl>
      <div class="actions" role="group" aria-label="Actions">
        <button type="button" class="primary" disabled={running} onClick={() => onAction('apply')}>Apply</button>
        <button type="button" disabled={running} onClick={() => onAction('export')}>Export</button>
        <button type="button" class="danger" disabled={running} onClick={() => onAction('remove')}>Remove</button>
        <button type="button" class="danger" disabled={running} onClick={() => onAction('remove-subtree')}>Remove subtree</button>
      </div>
      <JobOutcome job={job} />
    </div>
  );
}

function RenameTitle({ vm, checkpoint: c, onRenamed }: { vm: VmDescription; checkpoint: Checkpoint; onRenamed: () => void }) {
  const [editing, setEditing] = useState(false);
  const [name, setName] = useState(c.name);
  const { error, post, clear } = usePost();
  const save = async (): Promise<void> => {
    if (await post('/api/vm/rename', { path: vm.folder, checkpoint: c.id, name })) {
      setEditing(false);
      onRenamed();
    }
  };
  if (!editing) {
    return (
      <div class="details-title">
        <h2>{c.name}</h2>
        <button type="button" class="small" onClick={() => (setName(c.name), clear(), setEditing(true))}>
          Rename
        </button>
      </div>
    );
  }
  return (
    <form
      class="rename"
      aria-label={`Rename ${c.name}`}
      onSubmit={(e) => {
        e.preventDefault();
        void save();
      }}
    >
      <div class="row">
        <input
          type="text"
          aria-label="New name"
          value={name}
          ref={(el) => el?.focus()}
          onInput={(e) => setName((e.target as HTMLInputElement).value)}
          onKeyDown={(e) => {
            if (e.key === 'Escape') setEditing(false);
          }}
        />
        <button type="submit" class="small primary">Save</button>
        <button type="button" class="small" onClick={() => setEditing(false)}>Cancel</button>
      </div>
      <ErrorNote error={error} label="Rename refused" />
    </form>
  );
}

function Chains({ vm }: { vm: VmDescription }) {
  const label = (namedBy: string | null): string => (namedBy === 'now' ? 'Now' : namedBy ? `"${vm.checkpoints.find((c) => c.id === namedBy)?.name ?? namedBy}"` : 'unnamed');
  return (
    <div class="card">
      <div class="card-head">
        <h2>Disks</h2>
        <span class="muted small">each disk's chain from Now's leaf to its base</span>
      </div>
      {vm.disks.map((d) => (
        <div key={d.id}>
          <h3>
            {d.id} · {d.format.toUpperCase()} · {bytes(d.virtualSize)}
          </h3>
          <table class="grid" aria-label={`Chain of ${d.id}`}>
            <thead>
              <tr>
                <th scope="col">File</th>
                <th scope="col">Layer of</th>
                <th scope="col" class="num">On disk</th>
              </tr>
            </thead>
            <tbody>
              {d.chain.map((l) => (
                <tr key={l.node} class={l.namedBy ? '' : 'unnamed'}>
                  <td><code>{l.file}</code></td>
                  <td>{label(l.namedBy)}{l.namedBy === null && <span class="badge warn">unnamed</span>}</td>
                  <td class="num">{bytes(l.bytes)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ))}
      {vm.unnamed.length > 0 && (
        <div>
          <h3>Unnamed layers</h3>
          <ul class="plain" aria-label="Unnamed layers">
            {vm.unnamed.map((u) => (
              <li key={u.node}>
                <code>{u.file}</code> ({u.disk}, {bytes(u.bytes)}): {u.children > 1 ? `kept, ${u.children} children depend on it` : 'waiting to be merged with its only child'}
              </li>
            ))}
          </ul>
        </div>
      )}
    </div>
  );
}

/** Which power actions a runtime state allows (the runtime refuses the others with VM_STATE). */
const POWER: Array<{ action: string; label: string; when: string[] }> = [
  { action: 'start', label: 'Start', when: ['Off', 'Saved'] },
  { action: 'stop', label: 'Stop', when: ['Running', 'Paused', 'Paused-Critical'] },
  { action: 'save', label: 'Save', when: ['Running', 'Paused'] },
  { action: 'pause', label: 'Pause', when: ['Running'] },
  { action: 'resume', label: 'Resume', when: ['Paused', 'Paused-Critical'] },
];

/** States in which the worker can be told to end QEMU at once (Hyper-V's Turn Off). */
const TURN_OFF_WHEN = ['Running', 'Paused', 'Paused-Critical', 'Stopping', 'Saving'];

function Power({ path, view, jobs }: { path: string; view: VmView; jobs: JobView[] }) {
  const { error, busy, post } = usePost();
  const [confirming, setConfirming] = useState(false);
  const state = view.runtime?.state ?? 'Off';
  const job = latest(jobs, (j) => j.kind === 'power');
  const running = job?.state === 'running' || view.state === 'Busy';
  const act = (action: string, force = false): void => {
    setConfirming(false);
    void post('/api/vm/power', { path, action, ...(force ? { force } : {}) });
  };
  return (
    <div class="power">
      <div class="row" role="group" aria-label="Power">
        {POWER.map((p) => (
          <button key={p.action} type="button" class="small" disabled={busy || running || !p.when.includes(state)} onClick={() => act(p.action)}>
            {p.label}
          </button>
        ))}
        <button type="button" class="small danger" disabled={busy || !TURN_OFF_WHEN.includes(state)} aria-expanded={confirming} title="end QEMU at once, like pulling the power: what the guest had not written is lost" onClick={() => setConfirming(!confirming)}>
          Turn off
        </button>
      </div>
      {confirming && (
        <div class="row confirm" role="group" aria-label="Confirm turn off">
          <span class="small">Turn off now? The guest gets no chance to shut down; what it had not written is lost.</span>
          <button type="button" class="small danger-fill" onClick={() => act('stop', true)}>
            Turn off now
          </button>
          <button type="button" class="small" onClick={() => setConfirming(false)}>
            Keep running
          </button>
        </div>
      )}
      <ErrorNote error={error} label="Power action refused" />
      <JobOutcome job={job} />
    </div>
  );
}

function RuntimeNote({ status: s }: { status: VmStatus }) {
  const lines: string[] = [];
  if (s.state !== 'Off' && s.started) lines.push(`${s.state} since ${when(s.started)}${s.accel ? ` (${s.accel.toUpperCase()}${s.machine ? `, ${s.machine}` : ''})` : ''}${s.busy ? `; busy: ${s.busy}` : ''}`);
  if (s.saved) lines.push(`Saved state from ${when(s.saved.created)}: Start resumes it.`);
  if (s.reason) lines.push(s.reason);
  if (s.critical) lines.push(`QEMU could not ${s.critical.operation} on ${s.critical.device}: ${s.critical.reason}. Free space, then Resume.`);
  if (s.stale) lines.push(`A worker died: ${s.stale}`);
  lines.push(...s.warnings);
  if (lines.length === 0 && !s.lowSpace) return null;
  return (
    <div class={`card runtime-note${s.critical || s.stale ? ' warn-card' : ''}`} role="status" aria-label="Runtime">
      {lines.map((l) => (
        <p key={l}>{l}</p>
      ))}
      {s.lowSpace && <LowSpace {...s.lowSpace} />}
    </div>
  );
}

/** The runtime's free-space reserve not met, in the units a person reads; the exact counts on hover. */
function LowSpace({ free, reserve }: { free: number; reserve: number }) {
  return (
    <p class="low-space" aria-label="Low space" title={`${free.toLocaleString('en')} bytes free; reserve ${reserve.toLocaleString('en')} bytes (the VM's freeSpaceReserveBytes)`}>
      The VM folder's file system has {bytes(free)} free, less than the reserve of {bytes(reserve)}: the guest pauses (Paused-Critical) when it is full. Free space on it.
    </p>
  );
}
