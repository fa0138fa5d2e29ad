/**
 * What one connection may hold at once: bytes of request payloads and reply data (from the moment a
 * request is read until its reply has left for the kernel) and a count of requests in flight. The
 * connection stops reading requests while it waits here, so a client that sends faster than it reads
 * replies, or faster than the disk works, is held back by TCP instead of by server memory.
 */
export class Budget {
  private bytes = 0;
  private count = 0;
  private waiting: Array<{ bytes: number; go: (granted: boolean) => void }> = [];
  private cancelled = false;

  constructor(
    readonly maxBytes: number,
    readonly maxCount: number,
  ) {}

  get bytesHeld(): number {
    return this.bytes;
  }
  get requestsHeld(): number {
    return this.count;
  }

  /**
   * Resolves with true once `bytes` (at most maxBytes) and one request slot are held, first come, first
   * served; with false once the budget is cancelled (the connection is closing).
   */
  acquire(bytes: number): Promise<boolean> {
    if (this.cancelled) return Promise.resolve(false);
    if (this.waiting.length === 0 && this.fits(bytes)) {
      this.take(bytes);
      return Promise.resolve(true);
    }
    return new Promise<boolean>((go) => this.waiting.push({ bytes, go }));
  }

  /** Every waiting and later acquire resolves with false. */
  cancel(): void {
    this.cancelled = true;
    for (const w of this.waiting.splice(0)) w.go(false);
  }

  release(bytes: number): void {
    this.bytes -= bytes;
    this.count--;
    while (this.waiting.length > 0 && this.fits(this.waiting[0]!.bytes)) {
      const w = this.waiting.shift()!;
      this.take(w.bytes);
      w.go(true);
    }
  }

  private fits(bytes: number): boolean {
    return this.count < this.maxCount && this.bytes + bytes <= this.maxBytes;
  }

  private take(bytes: number): void {
    this.bytes += bytes;
    this.count++;
  }
}
