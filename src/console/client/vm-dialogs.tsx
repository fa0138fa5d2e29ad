// The dialogs of the checkpoint actions that change or lose something: apply (with "create a checkpoint
// of Now first" checked by default), remove, remove subtree and export. Each asks the server for the
// operation's forecast (nothing is written) and spells out its consequences: what is discarded, what
// goes, what is merged and the space it needs, before the button that starts the job.
import { useEffect, useState } from 'preact/hooks';
import type { OperationForecast, VmDescription } from '../../api/index.js';
import type { ForecastView } from '../routes-vms.js';
import { api } from './api.js';
import { baseName, bytes, dirName, folderNameOf, MAX_NAME, nameProblem } from './format.js';
import { Dialog } from './dialog.js';
import { useLoad, usePost } from './hooks.js';
import { ErrorNote, FieldNote } from './widgets.js';

type Checkpoint = VmDescription['checkpoints'][number];

export type ActionKind = 'apply' | 'remove' | 'remove-subtree' | 'export';

export interface DialogProps {
  vm: VmDescription;
  checkpoint: Checkpoint;
  onClose: () => void;
  /** The forecast shown, for the page's space bar (null when there is none). */
  onForecast: (f: ForecastView | null, label: string) => void;
}

function nameOf(vm: VmDescription, id: string | null): string {
  if (id === null) return 'the root (no checkpoint)';
  return `"${vm.checkpoints.find((c) => c.id === id)?.name ?? id}"`;
}

function useForecast(props: DialogProps, body: Record<string, unknown>, label: string) {
  const key = JSON.stringify(body);
  const view = useLoad(key, () => api.post<ForecastView>('/api/vm/forecast', { path: props.vm.folder, checkpoint: props.checkpoint.id, ...body }));
  useEffect(() => props.onForecast(view.data, label), [view.data, label]);
  useEffect(() => () => props.onForecast(null, ''), []);
  return view;
}

/** Starts the action's job and closes the dialog; a refusal (LOCKED, PATH_NOT_ALLOWED, ...) stays in the dialog beside its button. */
function useSubmit(path: string, onClose: () => void) {
  const { error, busy, post } = usePost();
  const submit = async (body: object): Promise<void> => {
    if (await post(path, body)) onClose();
  };
  return { error, busy, submit };
}

function Merges({ f }: { f: OperationForecast }) {
  if (f.merges.length === 0) return null;
  return (
    <div>
      <h3>Merged afterwards ({f.merges.length})</h3>
      <ul class="plain consequences" aria-label="Merges">
        {f.merges.map((m) => (
          <li key={m.victim}>
            <code>{baseName(m.victim)}</code> {m.direction === 'merge' ? 'into' : 'with'} <code>{baseName(m.survivor)}</code>: {bytes(m.bytesToCopy)} to copy, up to {bytes(m.bytesNeeded)} more on disk
          </li>
        ))}
      </ul>
    </div>
  );
}

function SpaceLine({ view }: { view: ForecastView }) {
  const { forecast: f, space } = view;
  const fits = f.bytesNeeded <= space.available;
  return (
    <p class={fits ? 'ok-note' : 'error-note'}>
      Needs up to {bytes(f.bytesNeeded)} while it runs; {bytes(space.available)} free{fits ? '' : ': it does not fit, nothing would be changed'}.
      {f.bytesReclaimed > 0 && ` Gives back about ${bytes(f.bytesReclaimed)} once done.`}
    </p>
  );
}

function Buttons({ label, danger, busy, disabled, onConfirm, onClose }: { label: string; danger?: boolean; busy: boolean; disabled?: boolean; onConfirm: () => void; onClose: () => void }) {
  return (
    <div class="dialog-buttons">
      <button type="button" onClick={onClose}>
        Cancel
      </button>
      <button type="button" class={danger ? 'danger-fill' : 'primary'} disabled={busy || disabled} onClick={onConfirm}>
        {label}
      </button>
    </div>
  );
}

export function ApplyDialog(props: DialogProps) {
  const { vm, checkpoint: c, onClose } = props;
  const [first, setFirst] = useState(true);
  const [name, setName] = useState('');
  const view = useForecast(props, { operation: 'apply', checkpointFirst: first }, `applying "${c.name}"`);
  const { error, busy, submit } = useSubmit('/api/vm/apply', onClose);
  const f = view.data?.forecast;
  return (
    <Dialog title="Apply checkpoint" onClose={onClose}>
      <p>
        Now starts again from <strong>"{c.name}"</strong>: the disks read as they were then, and the VM's settings become the ones saved with it.
      </p>
      <label class="check">
        <input type="checkbox" checked={first} onChange={(e) => setFirst((e.target as HTMLInputElement).checked)} />
        Create a checkpoint of Now first
      </label>
      {first ? (
        <div class="field">
          <label for="apply-name">Name of the checkpoint of Now</label>
          <input id="apply-name" type="text" value={name} placeholder={`${vm.name} (date and time)`} onInput={(e) => setName((e.target as HTMLInputElement).value)} />
          <p class="muted small">Now's current state is kept as a new checkpoint under {nameOf(vm, vm.now.parent)}; nothing is lost.</p>
        </div>
      ) : (
        <div class="error-note" role="note" aria-label="Now is discarded">
          <span class="code">DISCARD</span>
          <p class="message">
            Now's current state is <strong>discarded</strong>: everything written since {nameOf(vm, vm.now.parent)} is deleted
            {f ? ` (${f.discarded.map(baseName).join(', ')}, ${bytes(f.deleted.filter((d) => f.discarded.includes(d.file)).reduce((s, d) => s + d.bytes, 0))})` : ''}. This cannot be undone.
          </p>
        </div>
      )}
      <ErrorNote error={view.error?.body} />
      {f && <Merges f={f} />}
      {view.data && <SpaceLine view={view.data} />}
      <ErrorNote error={error} label="Apply refused" />
      <Buttons label="Apply" danger={!first} busy={busy} onClose={onClose} onConfirm={() => submit({ path: vm.folder, checkpoint: c.id, checkpointFirst: first, ...(first && name.trim() ? { name: name.trim() } : {}) })} />
    </Dialog>
  );
}

export function RemoveDialog(props: DialogProps & { subtree: boolean }) {
  const { vm, checkpoint: c, onClose, subtree } = props;
  const view = useForecast(props, { operation: 'remove', subtree }, `removing "${c.name}"${subtree ? ' and its subtree' : ''}`);
  const { error, busy, submit } = useSubmit('/api/vm/remove', onClose);
  const f = view.data?.forecast;
  const label = subtree ? 'Remove subtree' : 'Remove';
  return (
    <Dialog title={subtree ? 'Remove subtree' : 'Remove checkpoint'} onClose={onClose} wide={subtree}>
      <p>
        {subtree ? (
          <>
            <strong>"{c.name}"</strong> and every checkpoint below it go.
          </>
        ) : (
          <>
            The checkpoint <strong>"{c.name}"</strong> goes; its children move up to {nameOf(vm, c.parent)}.
          </>
        )}{' '}
        Now's content does not change{f && f.nowParent !== vm.now.parent ? `; Now moves up under ${nameOf(vm, f.nowParent)}` : ''}.
      </p>
      <ErrorNote error={view.error?.body} />
      {!f && !view.error && <p class="muted">Measuring what it merges…</p>}
      {f && subtree && (
        <div>
          <h3>Checkpoints removed ({f.removed.length})</h3>
          <ul class="plain consequences" aria-label="Checkpoints removed">
            {f.removed.map((r) => (
              <li key={r.id}>"{r.name}"</li>
            ))}
          </ul>
        </div>
      )}
      {f && <Merges f={f} />}
      {f && f.deleted.length > 0 && (
        <div>
          <h3>Deleted</h3>
          <ul class="plain consequences" aria-label="Files deleted">
            {f.deleted.map((d) => (
              <li key={d.file}>
                <code>{d.file}</code> ({bytes(d.bytes)})
              </li>
            ))}
          </ul>
        </div>
      )}
      {f && f.kept.length > 0 && <p class="muted small">Kept as unnamed layers (several children still depend on them): {f.kept.map(baseName).join(', ')}</p>}
      {view.data && <SpaceLine view={view.data} />}
      <ErrorNote error={error} label={`${label} refused`} />
      <Buttons label={label} danger busy={busy} disabled={!f} onClose={onClose} onConfirm={() => submit({ path: vm.folder, checkpoint: c.id, subtree })} />
    </Dialog>
  );
}

/** The exported VM's default name: the VM's and the checkpoint's, cut to Hyper-V's limit. */
function defaultName(vm: VmDescription, c: Checkpoint): string {
  return `${vm.name} - ${c.name}`.slice(0, MAX_NAME).trim();
}

export function ExportDialog(props: DialogProps) {
  const { vm, checkpoint: c, onClose } = props;
  const [name, setName] = useState(defaultName(vm, c));
  // The folder follows the name (beside the VM's) until it is edited by hand.
  const [typedTarget, setTypedTarget] = useState<string | null>(null);
  const target = typedTarget ?? `${dirName(vm.folder)}/${folderNameOf(name)}`;
  const [format, setFormat] = useState<'' | 'vhdx' | 'vhd' | 'raw'>('');
  const view = useForecast(props, { operation: 'export', ...(format ? { format } : {}) }, `exporting "${c.name}"`);
  const { error, busy, submit } = useSubmit('/api/vm/export', onClose);
  const nameIssue = nameProblem(name);
  const targetIssue = target.trim() === '' ? 'A folder is needed.' : null;
  return (
    <Dialog title="Export checkpoint" onClose={onClose}>
      <p>
        A new, standalone VM with the disks flattened as they were at <strong>"{c.name}"</strong> and its settings. This VM is only read.
      </p>
      <div class="field">
        <label for="export-name">Name of the new VM</label>
        <input id="export-name" type="text" value={name} maxLength={MAX_NAME + 20} aria-invalid={nameIssue ? 'true' : 'false'} aria-describedby="export-name-problem" onInput={(e) => setName((e.target as HTMLInputElement).value)} />
        <FieldNote id="export-name-problem" problem={nameIssue} />
      </div>
      <div class="field">
        <label for="export-target">New VM folder</label>
        <input id="export-target" type="text" value={target} spellcheck={false} aria-invalid={targetIssue ? 'true' : 'false'} aria-describedby="export-target-problem" onInput={(e) => setTypedTarget((e.target as HTMLInputElement).value)} />
        <FieldNote id="export-target-problem" problem={targetIssue} />
      </div>
      <div class="field">
        <label for="export-format">Disk format</label>
        <select id="export-format" value={format} onChange={(e) => setFormat((e.target as HTMLSelectElement).value as typeof format)}>
          <option value="">as they are</option>
          <option value="vhdx">VHDX</option>
          <option value="vhd">VHD</option>
          <option value="raw">raw</option>
        </select>
      </div>
      <ErrorNote error={view.error?.body} />
      {view.data && <SpaceLine view={view.data} />}
      <ErrorNote error={error} label="Export refused" />
      <Buttons label="Export" busy={busy} disabled={nameIssue !== null || targetIssue !== null} onClose={onClose} onConfirm={() => submit({ path: vm.folder, checkpoint: c.id, target: target.trim(), name: name.trim(), ...(format ? { format } : {}) })} />
    </Dialog>
  );
}
