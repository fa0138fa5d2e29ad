import { DiskChain } from '../chain/disk-chain.js';
import type { LongOperationOptions } from './progress.js';
import { forecastGrowth, freeBytes, type GrowthForecast } from './space.js';

const MIB = 1024 * 1024;

export interface MergeMeasure extends GrowthForecast {
  target: string;
  /** Bytes free on the target's file system now. */
  freeBytes: number;
  fits: boolean;
}

export interface Measure {
  virtualSize: number;
  layers: string[];
  /** Bytes that read as data through the chain (what a standalone copy must hold). */
  dataBytes: number;
  /** Merging the disk into its parent (null without a parent). */
  mergeIntoParent: MergeMeasure | null;
  /** Merging every layer into the base (null without a parent). */
  mergeIntoBase: MergeMeasure | null;
  /** Upper bounds of a standalone copy's file size (convert, rebase --standalone), per format. */
  convert: { vhdx: number; vhd: number; raw: number };
}

/** The space each operation on `chain` needs, measured from the allocation maps (nothing is written). */
export async function measureChain(chain: DiskChain, options: LongOperationOptions = {}): Promise<Measure> {
  const size = chain.virtualSize;
  let dataBytes = 0;
  const touched = { vhdx: 0, vhd: 0 };
  const last = { vhdx: -1, vhd: -1 };
  const blockOf = { vhdx: 32 * MIB, vhd: 2 * MIB };
  for await (const e of chain.mapWindows(options.signal)) {
    if (e.state !== 'data') continue;
    dataBytes += e.length;
    for (const f of ['vhdx', 'vhd'] as const) {
      const first = Math.max(Math.floor(e.offset / blockOf[f]), last[f] + 1);
      const end = Math.floor((e.offset + e.length - 1) / blockOf[f]);
      if (end >= first) touched[f] += end - first + 1;
      last[f] = Math.max(last[f], end);
    }
  }
  const merge = async (k: number): Promise<MergeMeasure | null> => {
    if (chain.layers.length <= k) return null;
    const target = chain.layers[k]!;
    const growth = await forecastGrowth(new DiskChain(chain.layers.slice(0, k), chain.links.slice(0, k - 1)), target, options.signal);
    const free = await freeBytes(target.path);
    return { target: target.path, ...growth, freeBytes: free, fits: growth.bytesNeeded <= free };
  };
  const intoParent = await merge(1);
  const vhdBat = Math.ceil((Math.ceil(size / blockOf.vhd) * 4) / 512) * 512;
  return {
    virtualSize: size,
    layers: chain.layers.map((l) => l.path),
    dataBytes,
    mergeIntoParent: intoParent,
    mergeIntoBase: chain.layers.length > 2 ? await merge(chain.layers.length - 1) : intoParent,
    convert: {
      // Our VHDX layout: 3 MiB of headers, log and metadata, the BAT, then 1 MiB-aligned blocks.
      vhdx: 4 * MIB + Math.ceil((Math.ceil(size / blockOf.vhdx) * 8) / MIB) * MIB + touched.vhdx * blockOf.vhdx,
      // VHD: footer copy, header, BAT, then each block after its 512-byte sector bitmap.
      vhd: 3 * 512 + 1024 + vhdBat + touched.vhd * (blockOf.vhd + 512),
      raw: dataBytes,
    },
  };
}
