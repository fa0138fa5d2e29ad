/**
 * The order in which an export's changes reach its backend. Every write, write-zeroes and trim passes
 * through `change` with the range it touches; every flush through `barrier`.
 *
 * This is the hook for per-block serialisation: the running-VM worker merges a checkpoint into the layer
 * the guest writes while the guest runs ("guest writes win"), so it installs a gate that lets its merge
 * copy take the same block ranges the guest's writes take, and changes to other blocks proceed.
 */
export interface WriteGate {
  /** Runs `fn`, a change to [offset, offset+length), when no conflicting change is running. */
  change<T>(offset: number, length: number, fn: () => Promise<T>): Promise<T>;
  /** Runs `fn` after every change that entered the gate before it has finished. */
  barrier<T>(fn: () => Promise<T>): Promise<T>;
}

/**
 * One change at a time, in arrival order: the formats' write paths allocate blocks and extend files, and
 * two allocating writes must not interleave. Reads do not pass here; they run concurrently.
 */
export class SerialGate implements WriteGate {
  private tail: Promise<unknown> = Promise.resolve();

  change<T>(_offset: number, _length: number, fn: () => Promise<T>): Promise<T> {
    return this.enqueue(fn);
  }

  barrier<T>(fn: () => Promise<T>): Promise<T> {
    return this.enqueue(fn);
  }

  private enqueue<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(fn, fn);
    this.tail = run.catch(() => undefined);
    return run;
  }
}
