import { DiskchainError, throwIfAborted } from '../io/errors.js';
import type { VirtualDisk } from '../formats/types.js';
import type { LocateAttempt } from './locate.js';
import { writeZeroes, type WriteZeroesOptions } from './write-zeroes.js';

export interface ChainLink {
  parentPath: string;
  attempts: LocateAttempt[];
  identityMatches: boolean;
  /** How the parent was found: by a stored path, or by identity in a search folder (the paths are stale). */
  foundBy: 'path' | 'identity' | 'remembered';
}

/** A range of the composed disk: where its bytes come from. `layer` is 0 for the leaf. */
export interface ChainExtent {
  offset: number;
  length: number;
  state: 'data' | 'zero' | 'absent';
  layer?: number;
}

const MAP_WINDOW = 1024 * 1024 * 1024;

/** A leaf and its ancestors, read as one disk: each range from the nearest layer that holds it. */
export class DiskChain {
  constructor(
    /** layers[0] is the leaf (the disk opened), the last is the base. */
    readonly layers: VirtualDisk[],
    /** links[i] describes how layers[i+1] was found from layers[i]. */
    readonly links: ChainLink[],
  ) {}

  get leaf(): VirtualDisk {
    return this.layers[0]!;
  }
  get virtualSize(): number {
    return this.leaf.virtualSize;
  }
  get logicalSectorSize(): number {
    return this.leaf.logicalSectorSize;
  }

  /** The states of [offset, offset+length), which need not be sector aligned (layers are asked whole sectors). */
  async map(offset: number, length: number): Promise<ChainExtent[]> {
    this.checkRange(offset, length);
    const sector = this.logicalSectorSize;
    const start = Math.floor(offset / sector) * sector;
    const end = Math.min(this.virtualSize, Math.ceil((offset + length) / sector) * sector);
    const out: ChainExtent[] = [];
    await this.mapLayer(0, start, end - start, out);
    const first = out[0];
    if (first && start < offset) {
      first.length -= offset - start;
      first.offset = offset;
    }
    const last = out[out.length - 1];
    if (last && end > offset + length) last.length -= end - (offset + length);
    return out.filter((e) => e.length > 0);
  }

  /** The map of the whole disk, walked a gigabyte at a time. */
  async mapAll(): Promise<ChainExtent[]> {
    const out: ChainExtent[] = [];
    for await (const e of this.mapWindows()) appendExtent(out, e);
    return out;
  }

  /** The map of the whole disk, in order, a gigabyte window at a time (bounded memory whatever the size). */
  async *mapWindows(signal?: AbortSignal): AsyncGenerator<ChainExtent> {
    for (let offset = 0; offset < this.virtualSize; offset += MAP_WINDOW) {
      throwIfAborted(signal);
      yield* await this.map(offset, Math.min(MAP_WINDOW, this.virtualSize - offset));
    }
  }

  private async mapLayer(i: number, offset: number, length: number, out: ChainExtent[]): Promise<void> {
    const layer = this.layers[i];
    const push = (e: ChainExtent): void => appendExtent(out, e);
    if (!layer) return push({ offset, length, state: 'absent' });
    // A parent smaller than its child (a child grown after it was made) reads as zeros past its end.
    const within = Math.max(0, Math.min(length, layer.virtualSize - offset));
    if (within > 0) {
      for (const e of await layer.map(offset, within)) {
        if (e.state === 'transparent') await this.mapLayer(i + 1, e.offset, e.length, out);
        else push({ offset: e.offset, length: e.length, state: e.state, layer: i });
      }
    }
    if (within < length) push({ offset: offset + within, length: length - within, state: 'absent' });
  }

  /** Reads the composed disk; a range that is not sector aligned is read whole sectors, then cut. */
  async read(target: Uint8Array, offset: number): Promise<void> {
    this.checkRange(offset, target.length);
    const sector = this.logicalSectorSize;
    const start = Math.floor(offset / sector) * sector;
    const end = Math.min(this.virtualSize, Math.ceil((offset + target.length) / sector) * sector);
    if (start === offset && end === offset + target.length) return this.readLayer(0, target, offset);
    const whole = new Uint8Array(end - start);
    await this.readLayer(0, whole, start);
    target.set(whole.subarray(offset - start, offset - start + target.length));
  }

  private async readLayer(i: number, target: Uint8Array, offset: number): Promise<void> {
    const layer = this.layers[i];
    if (!layer) return void target.fill(0);
    const within = Math.max(0, Math.min(target.length, layer.virtualSize - offset));
    target.fill(0, within);
    if (within === 0) return;
    // The base has no parent to fall through to: its own read (transparent reads zeros) is the answer.
    if (i === this.layers.length - 1) return layer.read(target.subarray(0, within), offset);
    for (const e of await layer.map(offset, within)) {
      const part = target.subarray(e.offset - offset, e.offset - offset + e.length);
      if (e.state === 'data') await layer.read(part, e.offset);
      else if (e.state === 'zero') part.fill(0);
      else await this.readLayer(i + 1, part, e.offset);
    }
  }

  /** Writes into the leaf; partial sectors are completed from the chain first. */
  async write(data: Uint8Array, offset: number): Promise<void> {
    this.checkRange(offset, data.length);
    const sector = this.logicalSectorSize;
    const start = Math.floor(offset / sector) * sector;
    const end = Math.ceil((offset + data.length) / sector) * sector;
    if (start === offset && end === offset + data.length) return this.leaf.write(data, offset);
    const edge = async (at: number): Promise<Uint8Array> => {
      const buf = new Uint8Array(sector);
      await this.read(buf, at);
      return buf;
    };
    // Only the first and last sectors need the old bytes; the middle passes through.
    const head = await edge(start);
    const tail = end - sector > start ? await edge(end - sector) : head;
    const merged = new Uint8Array(end - start);
    merged.set(head, 0);
    merged.set(tail, merged.length - sector);
    merged.set(data, offset - start);
    await this.leaf.write(merged, start);
  }

  /** Makes a range read as zeros, writing as little as the formats allow (see write-zeroes.ts). */
  writeZeroes(offset: number, length: number, options?: WriteZeroesOptions): Promise<void> {
    return writeZeroes(this, offset, length, options);
  }

  async flush(): Promise<void> {
    await this.leaf.flush();
  }

  async close(): Promise<void> {
    const errors: unknown[] = [];
    for (const layer of this.layers) await layer.close().catch((e: unknown) => errors.push(e));
    if (errors.length > 0) throw errors[0];
  }

  private checkRange(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.virtualSize) {
      throw new DiskchainError('OUT_OF_RANGE', `range ${offset}+${length} is outside the virtual disk (${this.virtualSize} bytes)`, { file: this.leaf.path, offset });
    }
  }
}

/** Appends an extent, merging it into the last one when they continue each other. */
function appendExtent(out: ChainExtent[], e: ChainExtent): void {
  const last = out[out.length - 1];
  if (last && last.state === e.state && last.layer === e.layer && last.offset + last.length === e.offset) last.length += e.length;
  else out.push(e);
}
