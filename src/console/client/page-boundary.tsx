// A page that fails to render (a bug, or an answer of a shape the page does not expect) shows what went
// wrong where the page was, with a way back, instead of leaving a blank page; the header and the jobs
// panel keep working. Keyed by the route, so another page starts clean.
import { Component, type ComponentChildren } from 'preact';
import { ErrorNote } from './widgets.js';

export class PageBoundary extends Component<{ children: ComponentChildren }, { error: Error | null }> {
  override state = { error: null as Error | null };

  override componentDidCatch(error: Error): void {
    console.warn('diskchain console: the page failed to render', error);
    this.setState({ error });
  }

  override render() {
    const { error } = this.state;
    if (!error) return this.props.children;
    return (
      <section aria-label="This page failed">
        <ErrorNote error={{ code: 'INTERNAL', message: `this page could not be shown: ${error.message}` }} label="This page failed" />
        <p class="row">
          <button type="button" onClick={() => this.setState({ error: null })}>
            Try again
          </button>
          <a href="#/vms">Back to the VMs</a>
        </p>
      </section>
    );
  }
}
