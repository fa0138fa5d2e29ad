// The console's page: a header with the pages, the page, and the jobs panel beside it.
import { render } from 'preact';
import { api } from './api.js';
import { DisksPage } from './disks-page.js';
import { useLoad, useRoute, type Route } from './hooks.js';
import { JobsPanel } from './jobs-panel.js';
import { PageBoundary } from './page-boundary.js';
import { RecoveryPage } from './recovery-page.js';
import { VmPage } from './vm-page.js';
import { VmsPage } from './vms-page.js';
import './styles.css';

const PAGES = [
  { id: 'vms', label: 'VMs' },
  { id: 'disks', label: 'Disks' },
  { id: 'recovery', label: 'Recovery' },
];

function App() {
  const route = useRoute();
  const session = useLoad('session', (signal) => api.get<{ version: string; roots: string[] }>('/api/session', signal));
  return (
    <div class="shell">
      <header class="top">
        <a class="brand" href="#/vms">
          <span class="logo" aria-hidden="true" />
          diskchain <span class="brand-sub">console</span>
        </a>
        <nav aria-label="Pages">
          {PAGES.map((p) => (
            <a key={p.id} href={`#/${p.id}`} aria-current={route.page === p.id || (p.id === 'vms' && route.page === 'vm') ? 'page' : undefined}>
              {p.label}
            </a>
          ))}
        </nav>
        <span class="roots muted" title={session.data?.roots.join('\n')}>
          {session.data ? `roots: ${session.data.roots.join(', ')}` : ''}
        </span>
      </header>
      <div class="body">
        <main>
          <PageBoundary key={`${route.page}?${route.params}`}>{page(route)}</PageBoundary>
        </main>
        <JobsPanel />
      </div>
    </div>
  );
}

function page(route: Route) {
  if (route.page === 'recovery') return <RecoveryPage route={route} />;
  if (route.page === 'disks') return <DisksPage />;
  const path = route.params.get('path');
  if (route.page === 'vm' && path) return <VmPage key={path} path={path} />;
  return <VmsPage />;
}

render(<App />, document.getElementById('app')!);
