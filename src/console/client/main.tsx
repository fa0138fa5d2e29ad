// The console's page: a header with the pages, the page, and the jobs panel beside it.
import { render } from 'preact';
import { api } from './api.js';
import { DisksPage } from './disks-page.js';
import { useLoad, useRoute } from './hooks.js';
import { JobsPanel } from './jobs-panel.js';
import { RecoveryPage } from './recovery-page.js';
import './styles.css';

const PAGES = [
  { id: 'disks', label: 'Disks' },
  { id: 'recovery', label: 'Recovery' },
];

function App() {
  const route = useRoute();
  const session = useLoad('session', (signal) => api.get<{ version: string; roots: string[] }>('/api/session', signal));
  return (
    <div class="shell">
      <header class="top">
        <a class="brand" href="#/disks">
          <span class="logo" aria-hidden="true" />
          diskchain <span class="brand-sub">console</span>
        </a>
        <nav aria-label="Pages">
          {PAGES.map((p) => (
            <a key={p.id} href={`#/${p.id}`} aria-current={route.page === p.id ? 'page' : undefined}>
              {p.label}
            </a>
          ))}
        </nav>
        <span class="roots muted" title={session.data?.roots.join('\n')}>
          {session.data ? `roots: ${session.data.roots.join(', ')}` : ''}
        </span>
      </header>
      <div class="body">
        <main>{route.page === 'recovery' ? <RecoveryPage route={route} /> : <DisksPage />}</main>
        <JobsPanel />
      </div>
    </div>
  );
}

render(<App />, document.getElementById('app')!);
