import type { ByteSource } from '../../io/byte-source.js';
import { isDiskchainError } from '../../io/errors.js';
import { NULL_GUID } from '../../io/guid.js';
import { OverlaySource } from '../../io/overlay-source.js';
import type { Finding } from '../types.js';
import {
  decodeBatEntry,
  PAYLOAD_BLOCK_FULLY_PRESENT,
  PAYLOAD_BLOCK_NOT_PRESENT,
  PAYLOAD_BLOCK_PARTIALLY_PRESENT,
  PAYLOAD_BLOCK_ZERO,
  PAYLOAD_STATE_NAMES,
  SB_BLOCK_NOT_PRESENT,
  SB_BLOCK_PRESENT,
  SECTOR_BITMAP_BLOCK_SIZE,
} from './bat.js';
import { decodeHeader, HEADER_OFFSETS, HEADER_SIZE } from './header.js';
import { readHeaders, readLayout, type VhdxLayout } from './layout.js';
import { assertReplayWithin, replayBound } from './log-apply.js';
import { planReplay } from './log-replay.js';
import { MIB } from './metadata-items.js';
import { decodeRegionTable, REGION_TABLE_OFFSETS, REGION_TABLE_SIZE } from './region-table.js';

/** Structural validation of a VHDX file. Never throws on corruption; never writes. */
export async function checkVhdx(source: ByteSource): Promise<Finding[]> {
  const findings: Finding[] = [];
  const file = source.name;
  const add = (severity: Finding['severity'], code: string, message: string, offset?: number): void => {
    findings.push({ severity, code, message, file, ...(offset !== undefined ? { offset } : {}) });
  };
  const fromError = (e: unknown): void => {
    if (!isDiskchainError(e)) throw e;
    add('error', e.code, e.message, e.details.offset);
  };
  try {
    const { creator, current } = await readHeaders(source);
    await checkRedundantCopies(source, add);
    let view: ByteSource = source;
    if (current.header.logGuid !== NULL_GUID) {
      const { logOffset, logLength, logGuid } = current.header;
      const plan = await planReplay(source, logOffset, logLength, logGuid);
      if (plan) {
        add('warning', 'LOG_DIRTY', `the log holds ${plan.entryCount} entries that must be replayed (opening for write replays them)`, logOffset);
        const size = await source.size();
        view = new OverlaySource(source, plan.writes, Math.max(size, plan.minimumFileSize));
        assertReplayWithin(plan, replayBound(await readLayout(view, creator, current), size), source.name, logOffset);
      } else {
        add('warning', 'LOG_GUID_WITHOUT_ENTRIES', 'LogGuid is set but no log entry carries it; nothing to replay', HEADER_OFFSETS[current.slot] + 48);
      }
    }
    const layout = await readLayout(view, creator, current);
    await checkBat(view, layout, current.header.logOffset, current.header.logLength, add);
  } catch (e) {
    fromError(e);
  }
  return findings;
}

type Add = (severity: Finding['severity'], code: string, message: string, offset?: number) => void;

async function checkRedundantCopies(source: ByteSource, add: Add): Promise<void> {
  const file = source.name;
  const headers = [];
  for (const at of HEADER_OFFSETS) {
    const buf = new Uint8Array(HEADER_SIZE);
    await source.read(buf, at);
    const d = decodeHeader(buf, file, at);
    if (!d.ok) add('warning', 'HEADER_INVALID', `header copy is invalid (${d.reason}); the other copy is in use`, at);
    else headers.push(d.header);
  }
  if (headers.length === 2 && headers[0]!.sequenceNumber === headers[1]!.sequenceNumber && JSON.stringify(headers[0], big) !== JSON.stringify(headers[1], big)) {
    add('warning', 'HEADER_SEQUENCE_TIE', 'both headers have the same sequence number but differ', HEADER_OFFSETS[0]);
  }
  const tables = [];
  for (const at of REGION_TABLE_OFFSETS) {
    const buf = new Uint8Array(REGION_TABLE_SIZE);
    await source.read(buf, at);
    const d = decodeRegionTable(buf, file, at);
    if (!d.ok) add('warning', 'REGION_TABLE_INVALID', `region table copy is invalid (${d.reason})`, at);
    else tables.push(JSON.stringify(d.entries));
  }
  if (tables.length === 2 && tables[0] !== tables[1]) add('warning', 'REGION_TABLES_DIFFER', 'the two region tables differ', REGION_TABLE_OFFSETS[1]);
}

function big(_key: string, value: unknown): unknown {
  return typeof value === 'bigint' ? value.toString() : value;
}

/** §2.5 Every BAT entry: a valid state for this file type, a placement inside the file, no overlaps. */
async function checkBat(source: ByteSource, layout: VhdxLayout, logOffset: number, logLength: number, add: Add): Promise<void> {
  const { batLayout, bat } = layout;
  const hasParent = layout.fileParameters.hasParent;
  const fileSize = await source.size();
  const reserved: [number, number, string][] = [[0, MIB, 'the header section'], [logOffset, logOffset + logLength, 'the log'], ...layout.regions.map((r): [number, number, string] => [r.fileOffset, r.fileOffset + r.length, `region ${r.guid}`])];
  const used: [number, number, number][] = []; // start, end, BAT entry offset
  const entries = batLayout.totalEntries;
  const chunkBytes = MIB;
  const bitmapPresent = new Set<number>();
  const partialChunks = new Map<number, number>();
  for (let start = 0; start < entries * 8; start += chunkBytes) {
    const n = Math.min(chunkBytes, entries * 8 - start, bat.length - start);
    if (n <= 0) {
      add('error', 'BAT_TOO_SMALL', `BAT region ends before entry ${start / 8}`, bat.fileOffset + start);
      break;
    }
    const buf = new Uint8Array(n);
    await source.read(buf, bat.fileOffset + start);
    for (let i = 0; i < n / 8; i++) {
      const index = start / 8 + i;
      const at = bat.fileOffset + index * 8;
      const e = decodeBatEntry(buf, i * 8);
      const isBitmap = batLayout.isSectorBitmapIndex(index);
      if (buf[i * 8 + 2]! & 0x0f || buf[i * 8]! & 0xf8 || buf[i * 8 + 1]) add('warning', 'BAT_RESERVED_BITS', `BAT entry ${index} has reserved bits set`, at);
      let length = 0;
      if (isBitmap) {
        const chunk = (index - batLayout.chunkRatio) / (batLayout.chunkRatio + 1);
        if (e.state === SB_BLOCK_PRESENT) {
          if (!hasParent) add('error', 'SB_IN_NON_DIFFERENCING', `sector bitmap of chunk ${chunk} is present in a disk without a parent`, at);
          bitmapPresent.add(chunk);
          length = SECTOR_BITMAP_BLOCK_SIZE;
        } else if (e.state !== SB_BLOCK_NOT_PRESENT) add('error', 'SB_STATE_INVALID', `sector bitmap entry of chunk ${chunk} has invalid state ${e.state}`, at);
      } else {
        const block = index - Math.floor(index / (batLayout.chunkRatio + 1));
        if (!(e.state in PAYLOAD_STATE_NAMES)) add('error', 'BAT_STATE_INVALID', `block ${block} has reserved state ${e.state}`, at);
        else if (e.state === PAYLOAD_BLOCK_PARTIALLY_PRESENT && !hasParent) add('error', 'PARTIAL_IN_NON_DIFFERENCING', `block ${block} is PARTIALLY_PRESENT in a disk without a parent`, at);
        if (e.state === PAYLOAD_BLOCK_PARTIALLY_PRESENT) partialChunks.set(Math.floor(block / batLayout.chunkRatio), at);
        // The last block may be cut where the virtual disk ends.
        if (e.state === PAYLOAD_BLOCK_FULLY_PRESENT || e.state === PAYLOAD_BLOCK_PARTIALLY_PRESENT) {
          length = Math.min(layout.fileParameters.blockSize, layout.virtualSize - block * layout.fileParameters.blockSize);
        }
        if ((e.state === PAYLOAD_BLOCK_ZERO || e.state === PAYLOAD_BLOCK_NOT_PRESENT) && e.fileOffset !== 0) add('info', 'BAT_STALE_OFFSET', `block ${block} (${PAYLOAD_STATE_NAMES[e.state]}) keeps a file offset`, at);
      }
      if (length === 0) continue;
      if (e.fileOffset + length > fileSize) add('error', 'BLOCK_PAST_EOF', `BAT entry ${index} points at ${e.fileOffset}, past the end of the file (${fileSize})`, at);
      for (const [s, end, what] of reserved) {
        if (e.fileOffset < end && e.fileOffset + length > s) add('error', 'BLOCK_OVERLAPS_METADATA', `BAT entry ${index} at ${e.fileOffset} overlaps ${what}`, at);
      }
      used.push([e.fileOffset, e.fileOffset + length, at]);
    }
  }
  for (const [chunk, at] of partialChunks) {
    if (!bitmapPresent.has(chunk)) add('error', 'PARTIAL_WITHOUT_BITMAP', `chunk ${chunk} has PARTIALLY_PRESENT blocks but no sector bitmap`, at);
  }
  used.sort((a, b) => a[0] - b[0]);
  for (let i = 1; i < used.length; i++) {
    if (used[i]![0] < used[i - 1]![1]) add('error', 'BLOCKS_OVERLAP', `BAT entries at ${used[i - 1]![2]} and ${used[i]![2]} share file space at ${used[i]![0]}`, used[i]![2]);
  }
}
