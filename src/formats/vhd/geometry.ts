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

/** 65535 cylinders, 16 heads, 255 sectors per track: the most the field can say (spec appendix cap). */
export const MAX_GEOMETRY: Readonly<Geometry> = Object.freeze({ cylinders: 65535, heads: 16, sectorsPerTrack: 255 });

export function isMaxGeometry(g: Geometry): boolean {
  return g.cylinders === MAX_GEOMETRY.cylinders && g.heads === MAX_GEOMETRY.heads && g.sectorsPerTrack === MAX_GEOMETRY.sectorsPerTrack;
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

/**
 * The geometry diskchain writes for `size` bytes in a footer whose Creator Application is
 * `creatorApplication`, chosen so every reader sees `size` (docs/formats/vhd.md, "Which size readers
 * see"): the spec's geometry when QEMU sizes that creator's disks by Current Size anyway (what
 * Windows writes) or when it describes exactly `size`; otherwise the maximum geometry, which QEMU's
 * vpc driver reads as "use Current Size" whatever the creator (Disk2vhd writes it too, and the spec
 * algorithm itself gives it beyond 127.5 GiB). Windows, Hyper-V, Azure and libvhdi use Current Size.
 */
export function geometryToWrite(size: number, creatorApplication: string): Geometry {
  const g = geometryForSize(size);
  return QEMU_CURRENT_SIZE_CREATORS.includes(creatorApplication) || chsSectors(g) * SECTOR === size ? g : { ...MAX_GEOMETRY };
}

/**
 * Creator applications whose VHDs QEMU (block/vpc.c, 7.2) sizes by Current Size; any other creator's
 * disk it sizes by CHS geometry unless the geometry is the maximum or force_size_calc says otherwise.
 */
export const QEMU_CURRENT_SIZE_CREATORS: readonly string[] = ['win ', 'qem2', 'd2v ', 'CTXS', 'tap\0'];

/** The size QEMU 7.2 gives this footer without options (see QEMU_CURRENT_SIZE_CREATORS). */
export function qemuDefaultSize(creatorApplication: string, geometry: Geometry, currentSize: number): number {
  if (QEMU_CURRENT_SIZE_CREATORS.includes(creatorApplication) || isMaxGeometry(geometry)) return currentSize;
  return chsSectors(geometry) * SECTOR;
}
