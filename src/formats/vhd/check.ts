import type { ByteSource } from '../../io/byte-source.js';
import { isDiskchainError } from '../../io/errors.js';
import type { Finding } from '../types.js';
import { UNALLOCATED } from './bat.js';
import { SECTOR } from './constants.js';
import { geometryForSize, isMaxGeometry, qemuDefaultSize } from './geometry.js';
import { parseVhd } from './layout.js';
import { countBits } from './sector-bitmap.js';
import { NULL_UNIQUE_ID } from './unique-id.js';

/**
 * Structural validation (never throws on corruption, never writes): everything parseVhd
 * validates, plus per-block sector bitmaps and informational footer checks.
 */
export async function checkVhd(source: ByteSource): Promise<Finding[]> {
  const file = source.name;
  let layout;
  try {
    layout = await parseVhd(source);
  } catch (e) {
    if (isDiskchainError(e)) {
      return [{ severity: 'error', code: e.code, message: e.message, file, ...(e.details.offset !== undefined ? { offset: e.details.offset } : {}) }];
    }
    return [{ severity: 'error', code: 'IO', message: e instanceof Error ? e.message : String(e), file }];
  }
  const findings = [...layout.findings];
  const add = (severity: Finding['severity'], code: string, message: string, offset?: number): void => {
    findings.push({ severity, code, message, file, ...(offset !== undefined ? { offset } : {}) });
  };
  const f = layout.footer;
  if (f.originalSize !== BigInt(layout.virtualSize)) {
    add('info', 'VHD_RESIZED', `original size ${f.originalSize} differs from current size ${layout.virtualSize} (the disk was resized)`, layout.footerOffset + 40);
  }
  const g = geometryForSize(layout.virtualSize);
  const spec = g.cylinders === f.geometry.cylinders && g.heads === f.geometry.heads && g.sectorsPerTrack === f.geometry.sectorsPerTrack;
  if (!spec && !isMaxGeometry(f.geometry)) {
    add('info', 'VHD_GEOMETRY_UNUSUAL', `geometry ${f.geometry.cylinders}/${f.geometry.heads}/${f.geometry.sectorsPerTrack} is not the spec's ${g.cylinders}/${g.heads}/${g.sectorsPerTrack} for this size`, layout.footerOffset + 56);
  }
  const qemu = qemuDefaultSize(f.creatorApplication, f.geometry, layout.virtualSize);
  if (qemu !== layout.virtualSize) {
    add('info', 'VHD_QEMU_CHS_SIZE', `QEMU sizes a VHD from creator '${f.creatorApplication.replace(/\0/g, '\\0')}' by its CHS geometry: it sees ${qemu} bytes, not the current size ${layout.virtualSize} (qemu-img needs --image-opts driver=vpc,force_size_calc=current_size)`, layout.footerOffset + 56);
  }
  if (layout.diskType === 'differencing' && layout.header?.parentUniqueId === NULL_UNIQUE_ID) {
    add('warning', 'VHD_PARENT_ID_NULL', 'the differencing disk records a null parent unique id', layout.headerOffset + 40);
  }
  if (layout.diskType === 'fixed') return findings;

  // Spec, Sector Bitmap: read every allocated block's bitmap.
  const bm = new Uint8Array(layout.bitmapSize);
  const sectorsPerBlock = layout.blockSize / SECTOR;
  let partialDynamic = 0;
  for (let i = 0; i < layout.blockCount; i++) {
    const e = layout.bat[i]!;
    if (e === UNALLOCATED) continue;
    try {
      await source.read(bm, e * SECTOR);
    } catch (err) {
      add('error', isDiskchainError(err) ? err.code : 'IO', `cannot read the sector bitmap of block ${i}`, e * SECTOR);
      continue;
    }
    const set = countBits(bm, sectorsPerBlock);
    if (layout.diskType === 'dynamic' && set !== sectorsPerBlock) partialDynamic++;
    if (layout.diskType === 'differencing' && set === 0) {
      add('info', 'VHD_EMPTY_BLOCK', `block ${i} is allocated but its bitmap marks no sector present`, e * SECTOR);
    }
  }
  if (partialDynamic > 0) {
    add('info', 'VHD_DYNAMIC_PARTIAL_BITMAP', `${partialDynamic} block(s) of this dynamic disk have clear bitmap bits; their stored data is read regardless (as qemu and libvhdi do)`);
  }
  return findings;
}
