import { vhdDriver } from '../../src/formats/vhd/driver.js';
import { vhdChecksum } from '../../src/formats/vhd/checksum.js';
import { MemorySource } from '../../src/io/memory-source.js';
import type { DiskType } from '../../src/formats/types.js';
import { pseudoRandomBytes } from './vhd-util.js';

/** A small VHD made by our driver, with data in blocks 0 and 2 (of 4): bytes of the whole file. */
export async function sampleImage(diskType: DiskType, blockSize = 64 * 1024): Promise<Uint8Array> {
  const size = 4 * blockSize;
  const src = new MemorySource(new Uint8Array(0), { name: 'sample.vhd' });
  const disk = await vhdDriver.create(src, {
    diskType,
    virtualSize: size,
    blockSize,
    ...(diskType === 'differencing'
      ? {
          parent: {
            identity: { format: 'vhd' as const, uniqueId: '11111111-2222-4333-8444-555555555555', timestamp: 7 },
            virtualSize: size, logicalSectorSize: 512, physicalSectorSize: 512,
            relativePath: '.\\base.vhd', absolutePath: 'C:\\vm\\base.vhd',
          },
        }
      : {}),
  });
  await disk.write(pseudoRandomBytes(4096, 1), 0);
  await disk.write(pseudoRandomBytes(Math.min(8192, blockSize), 2), 2 * blockSize + Math.min(4096, blockSize / 2));
  await disk.close();
  return src.snapshot();
}

const be = (b: Uint8Array): DataView => new DataView(b.buffer, b.byteOffset, b.byteLength);

/** Rewrites footer fields (at the end and in the copy at 0, when present) with a valid checksum. */
export function patchFooter(img: Uint8Array, patch: (v: DataView) => void, where: 'both' | 'end' | 'copy' = 'both'): Uint8Array {
  const out = new Uint8Array(img);
  const copy = String.fromCharCode(...out.subarray(0, 8)) === 'conectix';
  const spots = [...(where !== 'copy' ? [out.length - 512] : []), ...(where !== 'end' && copy ? [0] : [])];
  for (const at of spots) {
    const f = out.subarray(at, at + 512);
    patch(be(f));
    be(f).setUint32(64, vhdChecksum(f, 64));
  }
  return out;
}

/** Rewrites dynamic header fields (header at 512) with a valid checksum. */
export function patchHeader(img: Uint8Array, patch: (v: DataView) => void, fixChecksum = true): Uint8Array {
  const out = new Uint8Array(img);
  const h = out.subarray(512, 1536);
  patch(be(h));
  if (fixChecksum) be(h).setUint32(36, vhdChecksum(h, 36));
  return out;
}

export function tableOffset(img: Uint8Array): number {
  return Number(be(img).getBigUint64(512 + 16));
}
