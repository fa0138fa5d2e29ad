import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ByteSource } from '../../src/io/byte-source.js';
import { MemorySource } from '../../src/io/memory-source.js';
import type { VirtualDisk } from '../../src/formats/types.js';

/** SHA-256 of a disk's own bytes (its read()), in chunks. */
export async function diskSha256(disk: VirtualDisk, chunk = 4 << 20): Promise<string> {
  const h = createHash('sha256');
  const buf = new Uint8Array(chunk);
  for (let off = 0; off < disk.virtualSize; off += chunk) {
    const n = Math.min(chunk, disk.virtualSize - off);
    const part = buf.subarray(0, n);
    await disk.read(part, off);
    h.update(part);
  }
  return h.digest('hex');
}

/**
 * Reads [offset, offset+target.length) of a chain, `layers[0]` the topmost: each sector from the
 * topmost layer whose map says data (or zero); zeros where every layer is transparent.
 */
export async function composeRead(layers: VirtualDisk[], target: Uint8Array, offset: number): Promise<void> {
  target.fill(0);
  const pending: Array<[number, number]> = [[offset, target.length]];
  for (const layer of layers) {
    const next: Array<[number, number]> = [];
    for (const [o, n] of pending) {
      for (const ext of await layer.map(o, n)) {
        if (ext.state === 'transparent') next.push([ext.offset, ext.length]);
        else if (ext.state === 'data') await layer.read(target.subarray(ext.offset - offset, ext.offset - offset + ext.length), ext.offset);
      }
    }
    pending.splice(0, pending.length, ...next);
    if (pending.length === 0) break;
  }
}

export async function chainSha256(layers: VirtualDisk[], chunk = 4 << 20): Promise<string> {
  const h = createHash('sha256');
  const size = layers[0]!.virtualSize;
  const buf = new Uint8Array(chunk);
  for (let off = 0; off < size; off += chunk) {
    const part = buf.subarray(0, Math.min(chunk, size - off));
    await composeRead(layers, part, off);
    h.update(part);
  }
  return h.digest('hex');
}

export function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

export function withTempDir(): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'diskchain-vhd-'));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Deterministic pseudo-random bytes (xorshift32), so failures reproduce. */
export function pseudoRandomBytes(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

type Op = { kind: 'write'; offset: number; data: Uint8Array } | { kind: 'truncate'; length: number } | { kind: 'flush' };

/**
 * A ByteSource over a MemorySource that records every mutation, so a test can rebuild the file as
 * it would be had the machine stopped after any prefix of the operations (a crash).
 */
export class RecordingSource implements ByteSource {
  readonly ops: Op[] = [];
  readonly readOnly = false;
  constructor(
    private readonly inner: MemorySource,
    readonly initial: Uint8Array,
  ) {}
  get name(): string {
    return this.inner.name;
  }
  size(): Promise<number> {
    return this.inner.size();
  }
  read(target: Uint8Array, offset: number): Promise<void> {
    return this.inner.read(target, offset);
  }
  readAvailable(target: Uint8Array, offset: number): Promise<number> {
    return this.inner.readAvailable(target, offset);
  }
  async write(data: Uint8Array, offset: number): Promise<void> {
    this.ops.push({ kind: 'write', offset, data: new Uint8Array(data) });
    await this.inner.write(data, offset);
  }
  async truncate(length: number): Promise<void> {
    this.ops.push({ kind: 'truncate', length });
    await this.inner.truncate(length);
  }
  async flush(): Promise<void> {
    this.ops.push({ kind: 'flush' });
    await this.inner.flush();
  }
  async close(): Promise<void> {}

  /** The file after only the first `count` operations reached the disk. */
  async replay(count: number): Promise<MemorySource> {
    const m = new MemorySource(this.initial, { name: 'crashed' });
    for (const op of this.ops.slice(0, count)) {
      if (op.kind === 'write') await m.write(op.data, op.offset);
      else if (op.kind === 'truncate') await m.truncate(op.length);
    }
    return m;
  }

  /** Indices just after each flush (the durable points). */
  flushPoints(): number[] {
    const out: number[] = [];
    this.ops.forEach((op, i) => {
      if (op.kind === 'flush') out.push(i + 1);
    });
    return out;
  }
}
