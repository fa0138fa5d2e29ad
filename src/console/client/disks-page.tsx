// Loose disks: every folder under the roots that holds disks, each disk with its chain and sizes, and
// the space of the file system with the forecast of merging the selected disk into its parent.
import { useState } from 'preact/hooks';
import { api, query } from './api.js';
import type { DiskFolder, Space } from '../routes-disks.js';
import type { Measure } from '../../api/index.js';
import { baseName, bytes, when } from './format.js';
import { useLoad } from './hooks.js';
import { Empty, ErrorNote, PageHead, SpaceBar } from './widgets.js';

interface DisksView {
  folders: DiskFolder[];
  spaces: Space[];
  orphans: Array<{ path: string }>;
  problems: Array<{ path: string; code: string; message: string }>;
}

export function DisksPage() {
  const view = useLoad('disks', (signal) => api.get<DisksView>('/api/disks', signal));
  return (
    <section aria-labelledby="disks-title">
      <PageHead id="disks-title" title="Disks" view={view}>
        VHDX and VHD files under the roots, found by content, with the chain each one reads through.
      </PageHead>
      {view.data && view.data.folders.length === 0 && <Empty>No disks under the roots.</Empty>}
      {view.data?.folders.map((f) => (
        <FolderCard key={f.folder} folder={f} space={view.data!.spaces.find((s) => s.path === f.folder) ?? null} />
      ))}
      {view.data && view.data.orphans.length + view.data.problems.length > 0 && (
        <div class="card warn-card">
          <h2>Needs attention</h2>
          <ul class="plain">
            {view.data.orphans.map((o) => (
              <li key={o.path}>
                <code>{o.path}</code>: its parent was not found. <a href={`#/recovery?${new URLSearchParams({ folder: o.path.slice(0, o.path.lastIndexOf('/')) })}`}>Scan its folder</a>
              </li>
            ))}
            {view.data.problems.map((p) => (
              <li key={p.path}>
                <code>{p.path}</code>: {p.code}: {p.message}
              </li>
            ))}
          </ul>
        </div>
      )}
    </section>
  );
}

function FolderCard({ folder, space }: { folder: DiskFolder; space: Space | null }) {
  const [selected, setSelected] = useState<string | null>(null);
  const measure = useLoad(selected, (signal) => api.get<Measure>(query('/api/measure', { path: selected! }), signal));
  const merge = measure.data?.mergeIntoParent ?? null;
  const total = folder.disks.reduce((s, d) => s + d.fileSize, 0);
  return (
    <div class="card">
      <div class="card-head">
        <h2 class="path-title" title={folder.folder}>{folder.folder}</h2>
        <span class="muted">
          {folder.disks.length} disk(s), {bytes(total)} on disk
        </span>
      </div>
      <p class="muted small">Select a differencing disk to see what merging it into its parent needs.</p>
      <table class="grid">
        <caption class="sr-only">Disks in {folder.folder}</caption>
        <thead>
          <tr>
            <th scope="col">File</th>
            <th scope="col">Type</th>
            <th scope="col" class="num">Virtual</th>
            <th scope="col" class="num">File size</th>
            <th scope="col">Modified</th>
            <th scope="col">Chain (this → base)</th>
          </tr>
        </thead>
        <tbody>
          {folder.disks.map((d) => (
            <tr key={d.path} class={selected === d.path ? 'selected' : ''} aria-selected={selected === d.path}>
              <td>
                <button type="button" class="link" onClick={() => setSelected(selected === d.path ? null : d.path)} aria-label={`Space to merge ${d.name}`} disabled={!d.parent} title={d.parent ? 'show what merging it into its parent needs' : 'a base disk'}>
                  {d.name}
                </button>
              </td>
              <td class="nowrap">
                <span class="badge neutral">{d.format.toUpperCase()}</span> {d.type}
                {d.dirtyLog && <span class="badge warn">dirty log</span>}
              </td>
              <td class="num">{bytes(d.virtualSize)}</td>
              <td class="num">{bytes(d.fileSize)}</td>
              <td class="nowrap">{when(d.mtime)}</td>
              <td>
                <ol class="chain" aria-label={`Chain of ${d.name}`}>
                  {d.chain.map((p) => (
                    <li key={p} title={p}>{baseName(p)}</li>
                  ))}
                </ol>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <ErrorNote error={measure.error?.body} />
      {space && (
        <SpaceBar
          space={space}
          title="File system"
          forecast={selected && merge ? { bytes: merge.bytesNeeded, label: `merging ${baseName(selected)} into ${baseName(merge.target)}` } : null}
        />
      )}
    </div>
  );
}
