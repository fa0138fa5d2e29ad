import { DiskchainError } from '../io/errors.js';
import type { AllocationExtent, ExportBackend } from './backend.js';
import { SerialGate, type WriteGate } from './write-gate.js';

export interface ExportOptions {
  /** The name clients ask for (NBD_OPT_GO, NBD_OPT_EXPORT_NAME). */
  name: string;
  /** Shown by clients that list exports (NBD_INFO_DESCRIPTION). */
  description?: string;
  /** Orders changes; default: one at a time (SerialGate). */
  gate?: WriteGate;
}

/**
 * A named disk the server offers. Every request runs against the current backend and is counted in
 * flight, so `pause` can wait until nothing runs and `swap` can put another backend behind the export
 * while clients stay connected: requests that arrive meanwhile wait and then run against the new one.
 */
export class NbdExport {
  readonly name: string;
  readonly description: string | undefined;
  readonly gate: WriteGate;
  private current: ExportBackend;
  private inFlight = 0;
  private idle: Array<() => void> = [];
  private paused: { promise: Promise<void>; release: () => void } | undefined;
  private closed = false;

  constructor(backend: ExportBackend, options: ExportOptions) {
    this.current = backend;
    this.name = options.name;
    this.description = options.description;
    this.gate = options.gate ?? new SerialGate();
  }

  get backend(): ExportBackend {
    return this.current;
  }
  get size(): number {
    return this.current.size;
  }
  get readOnly(): boolean {
    return this.current.readOnly;
  }

  read(target: Uint8Array, offset: number): Promise<void> {
    return this.use((b) => b.read(target, offset));
  }

  write(data: Uint8Array, offset: number): Promise<void> {
    return this.use((b) => this.gate.change(offset, data.length, () => b.write(data, offset)));
  }

  writeZeroes(offset: number, length: number, mayUnmap: boolean): Promise<void> {
    return this.use((b) => this.gate.change(offset, length, () => b.writeZeroes(offset, length, mayUnmap)));
  }

  trim(offset: number, length: number): Promise<void> {
    return this.use((b) => this.gate.change(offset, length, () => b.trim(offset, length)));
  }

  /** Durable before it resolves: every change completed before it was asked for. */
  flush(): Promise<void> {
    return this.use((b) => this.gate.barrier(() => b.flush()));
  }

  allocation(offset: number, length: number, maxExtents: number): Promise<AllocationExtent[]> {
    return this.use((b) => b.allocation(offset, length, maxExtents));
  }

  /** Stops new requests from starting (they wait) and resolves once none is running. */
  async pause(): Promise<void> {
    if (!this.paused) {
      let release!: () => void;
      const promise = new Promise<void>((resolve) => (release = resolve));
      this.paused = { promise, release };
    }
    if (this.inFlight > 0) await new Promise<void>((resolve) => this.idle.push(resolve));
  }

  /** Lets waiting and new requests run again. */
  resume(): void {
    const p = this.paused;
    this.paused = undefined;
    p?.release();
  }

  /**
   * Drains the requests in flight, flushes the current backend, puts `next` in its place and lets the
   * waiting requests run against it. Returns the previous backend, still open (the caller closes it).
   * The size must not change: connected clients were told it.
   */
  async swap(next: ExportBackend): Promise<ExportBackend> {
    if (next.size !== this.current.size) {
      throw new DiskchainError('INVALID_ARGUMENT', `export ${this.name}: the new disk has ${next.size} bytes, the served one ${this.current.size}`);
    }
    await this.pause();
    try {
      const previous = this.current;
      await previous.flush();
      this.current = next;
      return previous;
    } finally {
      this.resume();
    }
  }

  /** Drains, flushes and closes the backend; requests after this fail (NBD_ESHUTDOWN). */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.pause();
    this.closed = true;
    this.resume();
    try {
      if (!this.current.readOnly) await this.current.flush();
    } finally {
      await this.current.close();
    }
  }

  private async use<T>(fn: (backend: ExportBackend) => Promise<T>): Promise<T> {
    while (this.paused) await this.paused.promise;
    if (this.closed) throw new DiskchainError('ABORTED', `export ${this.name} is closed`);
    this.inFlight++;
    try {
      return await fn(this.current);
    } finally {
      if (--this.inFlight === 0) for (const wake of this.idle.splice(0)) wake();
    }
  }
}
