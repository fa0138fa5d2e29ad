import { SECTOR } from './constants.js';

/** Disk Geometry field: cylinders (u16), heads (u8), sectors per track (u8). */
export interface Geometry {
  cylinders: number;
  heads: number;
  sectorsPerTrack: number;
}

/** Total sectors the CHS geometry describes. */
export function chsSectors(g: Geometry): number {
  return g.cylinders * g.heads * g.sectorsPerTrack;
}

/**
 * The CHS geometry for a disk of `size` bytes, per the spec's "CHS Calculation" appendix.
 * The result may describe slightly fewer sectors than the disk has; the virtual size is always
 * the footer's Current Size (what Windows and libvhdi use), the geometry is informational.
 */
export function geometryForSize(size: number): Geometry {
  let totalSectors = Math.floor(size / SECTOR);
  const max = 65535 * 16 * 255;
  if (totalSectors > max) totalSectors = max;
  let sectorsPerTrack: number;
  let heads: number;
  let cylinderTimesHeads: number;
  if (totalSectors >= 65535 * 16 * 63) {
    sectorsPerTrack = 255;
    heads = 16;
    cylinderTimesHeads = Math.floor(totalSectors / sectorsPerTrack);
  } else {
    sectorsPerTrack = 17;
    cylinderTimesHeads = Math.floor(totalSectors / sectorsPerTrack);
    heads = Math.max(4, Math.floor((cylinderTimesHeads + 1023) / 1024));
    if (cylinderTimesHeads >= heads * 1024 || heads > 16) {
      sectorsPerTrack = 31;
      heads = 16;
      cylinderTimesHeads = Math.floor(totalSectors / sectorsPerTrack);
    }
    if (cylinderTimesHeads >= heads * 1024) {
      sectorsPerTrack = 63;
      heads = 16;
      cylinderTimesHeads = Math.floor(totalSectors / sectorsPerTrack);
    }
  }
  return { cylinders: Math.floor(cylinderTimesHeads / heads), heads, sectorsPerTrack };
}
