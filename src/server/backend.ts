import type { DiskChain } from '../chain/disk-chain.js';

/** One run of base:allocation status: `hole` (nothing allocated) and `zero` (reads as zeros). */
export interface AllocationExtent {
  length: number;
  hole: boolean;
  zero: boolean;
}

/**
 * What an export serves: a disk of `size` bytes. The NBD code knows nothing else of it, so the running-VM
 * worker can put another chain (a new differencing leaf after a checkpoint) behind a live export with
 * NbdExport.swap. Reads may run concurrently; changes (write, writeZeroes, trim) and flush reach a backend
 * one at a time, ordered by the export's WriteGate.
 */
export interface ExportBackend {
  readonly size: number;
  readonly readOnly: boolean;
  /** Requests aligned to this are served without a read-modify-write (a power of two, at least 512). */
  readonly preferredBlockSize: number;
  read(target: Uint8Array, offset: number): Promise<void>;
  write(data: Uint8Array, offset: number): Promise<void>;
  /** Makes the range read as zeros; `mayUnmap` false means it must stay allocated (NBD_CMD_FLAG_NO_HOLE). */
  writeZeroes(offset: number, length: number, mayUnmap: boolean): Promise<void>;
  /** A hint that the range is no longer needed; its content is undefined until written again. */
  trim(offset: number, length: number): Promise<void>;
  /** Every change that has completed is durable when this resolves. */
  flush(): Promise<void>;
  /** Consecutive runs from `offset`, covering at least one byte and at most `length`; at most `maxExtents`. */
  allocation(offset: number, length: number, maxExtents: number): Promise<AllocationExtent[]>;
  close(): Promise<void>;
}

/** The chain's map is consulted this much at a time for base:allocation. */
const STATUS_WINDOW = 256 * 1024 * 1024;

/** An export backend over a chain: reads compose the layers, changes go to the leaf. */
export class ChainBackend implements ExportBackend {
  readonly size: number;
  readonly readOnly: boolean;
  readonly preferredBlockSize: number;

  constructor(readonly chain: DiskChain) {
    this.size = chain.virtualSize;
    this.readOnly = chain.leaf.readOnly;
    this.preferredBlockSize = Math.max(4096, chain.logicalSectorSize);
  }

  read(target: Uint8Array, offset: number): Promise<void> {
    return this.chain.read(target, offset);
  }

  write(data: Uint8Array, offset: number): Promise<void> {
    return this.chain.write(data, offset);
  }

  writeZeroes(offset: number, length: number, mayUnmap: boolean): Promise<void> {
    return this.chain.writeZeroes(offset, length, { mayUnmap });
  }

  /**
   * Accepted and ignored: VHDX and VHD keep no free-space map, so space released inside the file could
   * never be given to another block and every trim-and-rewrite would grow the file. `diskchain convert`
   * compacts. (NBD lets a server discard nothing: the range's content is simply undefined until written.)
   */
  async trim(): Promise<void> {}

  flush(): Promise<void> {
    return this.chain.flush();
  }

  /**
   * base:allocation from the chain's map: data is allocated; ranges no layer holds, or that a layer says
   * read as zeros (a VHDX zero block), are holes that read as zeros. The map is walked a window at a time
   * until the range is covered or `maxExtents` runs are found.
   */
  async allocation(offset: number, length: number, maxExtents: number): Promise<AllocationExtent[]> {
    const out: AllocationExtent[] = [];
    const end = offset + length;
    for (let at = offset; at < end && out.length < maxExtents; at += STATUS_WINDOW) {
      for (const e of await this.chain.map(at, Math.min(STATUS_WINDOW, end - at))) {
        const hole = e.state !== 'data';
        const last = out[out.length - 1];
        if (last && last.hole === hole) last.length += e.length;
        else if (out.length < maxExtents) out.push({ length: e.length, hole, zero: hole });
        else return out;
      }
    }
    return out;
  }

  close(): Promise<void> {
    return this.chain.close();
  }
}
