/**
 * What a crash state of a disk must show (docs/crash-safety.md): sector by sector, the content after
 * every acknowledged write (a write followed by a flush that returned before the cut), or the data of
 * a write issued since. Guest writes and acknowledgements are marks in the recorder's event order.
 */
import type { VirtualDisk } from '../../src/formats/types.js';
import type { PowerCutRecorder } from './power-cut-recorder.js';

export { readChain } from './read-chain.js';

const SECTOR = 512;

interface Issued {
  offset: number;
  data: Uint8Array;
}

/** Writes through a disk and marks each write and each flush that returned. */
export class GuestLog {
  constructor(
    private readonly rec: PowerCutRecorder,
    private readonly disk: VirtualDisk,
  ) {}

  async write(data: Uint8Array, offset: number): Promise<void> {
    this.rec.mark('guest-write', { offset, data: new Uint8Array(data) } satisfies Issued);
    await this.disk.write(data, offset);
  }

  async flush(): Promise<void> {
    await this.disk.flush();
    this.rec.mark('guest-flush');
  }

  /** close() flushes: what was written is acknowledged once it returns. */
  async close(): Promise<void> {
    await this.disk.close();
    this.rec.mark('guest-flush');
  }
}

/** At cut `k`: the content every sector must show unless a pending write covers it, and the pending writes. */
export function expectationAt(rec: PowerCutRecorder, k: number, before: Uint8Array): { acked: Uint8Array; pending: Issued[] } {
  const writes = rec.marks<Issued>('guest-write').filter((w) => w.at < k);
  const lastAck = rec.marks('guest-flush').filter((f) => f.at < k).pop()?.at ?? -1;
  const acked = before.slice();
  for (const w of writes) if (w.at < lastAck) acked.set(w.value.data, w.value.offset);
  return { acked, pending: writes.filter((w) => w.at > lastAck).map((w) => w.value) };
}

/** Throws unless every 512-byte sector of `actual` is its acknowledged content or the data of a pending write covering it. */
export function assertOldOrNew(actual: Uint8Array, expected: { acked: Uint8Array; pending: Issued[] }, what: string): void {
  const { acked, pending } = expected;
  for (let off = 0; off < actual.length; off += SECTOR) {
    const a = actual.subarray(off, off + SECTOR);
    if (Buffer.compare(a, acked.subarray(off, off + SECTOR)) === 0) continue;
    const ok = pending.some((w) => w.offset <= off && off < w.offset + w.data.length && Buffer.compare(a, w.data.subarray(off - w.offset, off - w.offset + SECTOR)) === 0);
    if (!ok) {
      const covered = pending.some((w) => w.offset <= off && off < w.offset + w.data.length);
      throw new Error(`${what}: sector at ${off} reads neither its acknowledged content nor ${covered ? 'the data of a pending write' : 'anything written (no pending write covers it)'}`);
    }
  }
}
