// Pieces every page uses: an error next to what caused it, a progress bar, the space bar.
import type { ComponentChildren } from 'preact';
import type { ErrorBody } from './api.js';
import { bytes, hintFor } from './format.js';

export function ErrorNote({ error, label }: { error: ErrorBody | null | undefined; label?: string }) {
  if (!error) return null;
  const hint = hintFor(error);
  return (
    <div class="error-note" role="alert" aria-label={label ?? `Error ${error.code}`}>
      <span class="code">{error.code}</span>
      <div>
        <p class="message">{error.message}</p>
        {hint && <p class="hint">{hint}</p>}
      </div>
    </div>
  );
}

export function Progress({ done, total, label }: { done: number; total: number; label: string }) {
  const pct = total > 0 ? Math.min(100, (done / total) * 100) : 0;
  return (
    <div class="progress" role="progressbar" aria-label={label} aria-valuemin={0} aria-valuemax={100} aria-valuenow={Math.round(pct)}>
      <div class="bar" style={{ width: `${pct}%` }} />
    </div>
  );
}

export interface SpaceView {
  path: string;
  total: number;
  used: number;
  available: number;
  reserved: number;
}

/** Used, reserved for root, the selected operation's forecast, and what stays free. */
export function SpaceBar({ space, forecast, title }: { space: SpaceView; forecast?: { bytes: number; label: string } | null; title?: string }) {
  const t = Math.max(1, space.total);
  const need = forecast ? Math.max(0, forecast.bytes) : 0;
  const fits = need <= space.available;
  const pct = (n: number): string => `${Math.max(0, Math.min(100, (n / t) * 100))}%`;
  const summary = `${bytes(space.available)} free of ${bytes(space.total)}${forecast ? `; ${forecast.label} needs ${bytes(need)}${fits ? '' : ' — more than is free'}` : ''}`;
  return (
    <div class="space">
      <div class="space-head">
        <span class="space-title">{title ?? 'Space'}</span>
        <span class="space-path" title={space.path}>{space.path}</span>
      </div>
      <div class="space-bar" role="img" aria-label={`Space: ${summary}`}>
        <div class="seg used" style={{ width: pct(space.used) }} />
        <div class="seg reserved" style={{ width: pct(space.reserved) }} />
        {forecast && <div class={`seg forecast${fits ? '' : ' over'}`} style={{ width: pct(Math.min(need, space.available)) }} />}
      </div>
      <div class="space-legend">
        <Legend kind="used">used {bytes(space.used)}</Legend>
        {space.reserved > 0 && <Legend kind="reserved">reserved for root {bytes(space.reserved)}</Legend>}
        {forecast && <Legend kind={fits ? 'forecast' : 'forecast over'}>{forecast.label}: {bytes(need)}{fits ? '' : ' (does not fit)'}</Legend>}
        <Legend kind="free">free {bytes(space.available - (forecast && fits ? need : 0))}{forecast && fits ? ' after' : ''}</Legend>
      </div>
    </div>
  );
}

function Legend({ kind, children }: { kind: string; children: ComponentChildren }) {
  return (
    <span class="legend">
      <i class={`swatch ${kind}`} aria-hidden="true" />
      {children}
    </span>
  );
}

export function Empty({ children }: { children: ComponentChildren }) {
  return <p class="empty">{children}</p>;
}

/** A page's title, what it shows, and its Refresh button; errors of the load right under it. */
export function PageHead({ id, title, children, view }: { id: string; title: string; children: ComponentChildren; view: { reload: () => void; loading: boolean; error: { body: ErrorBody } | null } }) {
  return (
    <>
      <header class="page-head">
        <div>
          <h1 id={id}>{title}</h1>
          <p class="muted">{children}</p>
        </div>
        <button type="button" onClick={view.reload} disabled={view.loading}>
          {view.loading ? 'Reading…' : 'Refresh'}
        </button>
      </header>
      <ErrorNote error={view.error?.body} />
    </>
  );
}

/** A problem with one field, said under it (the field points at it with aria-describedby). */
export function FieldNote({ id, problem }: { id: string; problem: string | null }) {
  return (
    <p id={id} class={problem ? 'field-problem' : 'sr-only'} role={problem ? 'alert' : undefined}>
      {problem ?? ''}
    </p>
  );
}
