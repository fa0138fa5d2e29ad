/**
 * Rearranges the metadata region (§2.6) of a closed VHDX with a clean log, as other writers may lay it
 * out: the parent locator first with the other items packed after it (so it cannot grow in place),
 * extra locator keys, and optionally a user item taking every byte left (so nothing can grow at all).
 */
import { closeSync, openSync, readSync, writeSync } from 'node:fs';
import { randomGuid } from '../../src/io/guid.js';
import { PARENT_LOCATOR_GUID } from '../../src/formats/vhdx/metadata-items.js';
import { decodeMetadataTable, encodeMetadataTable, METADATA_TABLE_SIZE, type MetadataEntry } from '../../src/formats/vhdx/metadata-table.js';
import { decodeParentLocator, encodeParentLocator } from '../../src/formats/vhdx/parent-locator.js';
import { decodeRegionTable, METADATA_REGION_GUID, REGION_TABLE_OFFSETS, REGION_TABLE_SIZE } from '../../src/formats/vhdx/region-table.js';

export interface RelayoutOptions {
  /** Key/value pairs appended to the parent locator (keys unknown to the spec). */
  extraLocatorEntries?: [string, string][];
  /** Add a user item filling the rest of the region. */
  fillRegion?: boolean;
}

export function relayoutMetadata(path: string, options: RelayoutOptions = {}): { locatorOffset: number } {
  const fd = openSync(path, 'r+');
  try {
    const read = (at: number, n: number): Uint8Array => {
      const buf = new Uint8Array(n);
      readSync(fd, buf, 0, n, at);
      return buf;
    };
    const regions = decodeRegionTable(read(REGION_TABLE_OFFSETS[0], REGION_TABLE_SIZE), path, REGION_TABLE_OFFSETS[0]);
    if (!regions.ok) throw new Error(`region table: ${regions.reason}`);
    const region = regions.entries.find((r) => r.guid === METADATA_REGION_GUID)!;
    const entries = decodeMetadataTable(read(region.fileOffset, METADATA_TABLE_SIZE), region.length, path, region.fileOffset);
    const items = entries.map((e) => [e, read(region.fileOffset + e.offset, e.length)] as [MetadataEntry, Uint8Array]);
    items.sort(([a], [b]) => Number(b.itemId === PARENT_LOCATOR_GUID && !b.isUser) - Number(a.itemId === PARENT_LOCATOR_GUID && !a.isUser));
    if (options.extraLocatorEntries) {
      const [, data] = items[0]!;
      const locator = decodeParentLocator(data, path, 0);
      locator.entries.push(...options.extraLocatorEntries);
      items[0]![1] = encodeParentLocator(locator);
    }
    const image = new Uint8Array(region.length);
    const out: MetadataEntry[] = [];
    let cursor = METADATA_TABLE_SIZE;
    for (const [entry, data] of items) {
      image.set(data, cursor);
      out.push({ ...entry, offset: cursor, length: data.length });
      cursor += data.length;
    }
    if (options.fillRegion) {
      const length = region.length - cursor;
      image.fill(0x5a, cursor);
      out.push({ itemId: randomGuid(), offset: cursor, length, isUser: true, isVirtualDisk: false, isRequired: false });
    }
    image.set(encodeMetadataTable(out), 0);
    writeSync(fd, image, 0, image.length, region.fileOffset);
    return { locatorOffset: METADATA_TABLE_SIZE };
  } finally {
    closeSync(fd);
  }
}
