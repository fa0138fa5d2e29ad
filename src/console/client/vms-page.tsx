// The VMs under the roots: name, state, disks, checkpoints, bytes on disk, and the free space of the
// file systems that hold them; select several for a group checkpoint (one instant, all or none).
import { useState } from 'preact/hooks';
import type { VmState, VmsView } from '../routes-vms.js';
import { api, type ErrorBody } from './api.js';
import { baseName, bytes } from './format.js';
import { go, useJobs, useLoad, usePost } from './hooks.js';
import { fingerprint, usePulse } from './pulse.js';
import { Empty, ErrorNote, PageHead, SpaceBar } from './widgets.js';

const STATE: Record<VmState, { cls: string; title: string }> = {
  Off: { cls: 'neutral', title: 'not running' },
  Starting: { cls: 'running', title: 'the worker is starting QEMU' },
  Running: { cls: 'done', title: 'the guest runs' },
  Paused: { cls: 'warn', title: 'the guest is paused: Resume continues it' },
  'Paused-Critical': { cls: 'bad', title: 'QEMU paused the guest on a failed write (no space?): free space, then Resume' },
  Saving: { cls: 'running', title: 'memory and device state are being saved' },
  Saved: { cls: 'accent', title: 'memory saved: Start resumes it' },
  Stopping: { cls: 'running', title: 'shutting down' },
  Busy: { cls: 'running', title: 'a job of this console is working on it' },
  Pending: { cls: 'warn', title: 'an interrupted operation waits: the next action finishes or rolls it back' },
  Unreadable: { cls: 'bad', title: 'vm.json could not be read' },
};

export function StateBadge({ state, reason }: { state: VmState; reason?: string | null }) {
  const s = STATE[state];
  return (
    <span class={`badge ${s.cls}`} title={reason ?? s.title}>
      {state}
    </span>
  );
}

export function VmsPage() {
  const settled = useJobs().filter((j) => j.state !== 'running' && (j.about.vm !== undefined || j.about.vms !== undefined)).length;
  const view = useLoad(`vms:${settled}`, (signal) => api.get<VmsView>('/api/vms', signal));
  usePulse(null, view.data && !view.loading ? fingerprint(view.data.vms.map((v) => ({ ...v, nowParent: v.now?.parent ?? null }))) : null, view.reload);
  const [picked, setPicked] = useState<Set<string>>(new Set());
  const toggle = (folder: string, on: boolean): void => {
    const next = new Set(picked);
    if (on) next.add(folder);
    else next.delete(folder);
    setPicked(next);
  };
  return (
    <section aria-labelledby="vms-title">
      <PageHead id="vms-title" title="Virtual machines" view={view}>
        VM folders under the roots (and two levels below), with their checkpoint trees.
      </PageHead>
      {view.data && view.data.vms.length === 0 && <Empty>No VM folders under the roots. `diskchain vm create` makes one.</Empty>}
      {view.data && view.data.vms.length > 0 && (
        <div class="card">
          <table class="grid">
            <caption class="sr-only">Virtual machines</caption>
            <thead>
              <tr>
                <th scope="col"><span class="sr-only">Select</span></th>
                <th scope="col">Name</th>
                <th scope="col">State</th>
                <th scope="col" class="num">Disks</th>
                <th scope="col" class="num">Checkpoints</th>
                <th scope="col" class="num">On disk</th>
                <th scope="col" class="num">Free on its file system</th>
                <th scope="col">Folder</th>
              </tr>
            </thead>
            <tbody>
              {view.data.vms.map((v) => (
                <tr key={v.folder} class={picked.has(v.folder) ? 'selected' : ''}>
                  <td>
                    <input type="checkbox" aria-label={`Select ${v.name === baseName(v.folder) ? v.name : `${v.name ?? 'VM'} (${baseName(v.folder)})`}`} disabled={v.error !== null} checked={picked.has(v.folder)} onChange={(e) => toggle(v.folder, (e.target as HTMLInputElement).checked)} />
                  </td>
                  <td>
                    <a href={`#/vm?${new URLSearchParams({ path: v.folder })}`} onClick={(e) => (e.preventDefault(), go('vm', { path: v.folder }))}>
                      {v.name ?? baseName(v.folder)}
                    </a>
                    {v.error && <ErrorNote error={v.error as ErrorBody} />}
                  </td>
                  <td><StateBadge state={v.state} reason={v.runtime?.reason} /></td>
                  <td class="num">{v.disks}</td>
                  <td class="num">{v.checkpoints}</td>
                  <td class="num">{bytes(v.bytes)}</td>
                  <td class="num">{bytes(view.data!.spaces[v.space]?.available)}</td>
                  <td><code class="small">{v.folder}</code></td>
                </tr>
              ))}
            </tbody>
          </table>
          <GroupForm picked={[...picked]} />
        </div>
      )}
      {view.data?.spaces.map((s) => (
        <div class="card" key={s.path}>
          <SpaceBar space={s} title="File system" />
        </div>
      ))}
    </section>
  );
}

function GroupForm({ picked }: { picked: string[] }) {
  const [name, setName] = useState('');
  const { error, post } = usePost();
  const submit = async (e: Event): Promise<void> => {
    e.preventDefault();
    await post('/api/vms/checkpoint', { paths: picked, ...(name.trim() ? { name: name.trim() } : {}) });
  };
  return (
    <form class="row group-form" onSubmit={submit} aria-label="Group checkpoint">
      <span class="muted small">{picked.length} selected</span>
      <input type="text" aria-label="Group checkpoint name" placeholder="name (optional)" title="empty: Group and the date and time" value={name} onInput={(e) => setName((e.target as HTMLInputElement).value)} />
      <button type="submit" disabled={picked.length < 2} title="checkpoint the selected VMs at one instant, all or none">
        Group checkpoint
      </button>
      <ErrorNote error={error} label="Group checkpoint refused" />
    </form>
  );
}
