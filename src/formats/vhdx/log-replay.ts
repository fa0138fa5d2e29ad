import type { ByteSource } from '../../io/byte-source.js';
import { toSafeNumber } from '../../io/binary.js';
import { corrupt, DiskchainError } from '../../io/errors.js';
import type { OverlayWrite } from '../../io/overlay-source.js';
import {
  dataSectorSequence,
  decodeDescriptor,
  decodeEntryHeader,
  descriptorSectors,
  entryChecksum,
  LOG_SECTOR,
  rebuildPage,
  type LogEntryHeader,
} from './log-entry.js';

/** The largest dirty log we will read into memory to replay. Hyper-V makes 1 MiB logs. */
export const MAX_REPLAY_LOG_LENGTH = 64 * 1024 * 1024;
/** No legitimate log entry extends a file beyond this. */
const MAX_FILE_SIZE = 2 ** 47;
/** §2.2 Log entries may never target the file identifier or the headers (region tables may be logged). */
const PROTECTED_END = 192 * 1024;

interface ValidEntry {
  at: number;
  header: LogEntryHeader;
  writes: OverlayWrite[];
}

export interface ReplayPlan {
  /** Writes in replay order. */
  writes: OverlayWrite[];
  /** The file must be at least this long afterwards (head LastFileOffset). */
  minimumFileSize: number;
  headSequence: bigint;
  entryCount: number;
}

/**
 * §2.3.3 Finds the active sequence of a dirty log and returns the writes that replay it.
 * Undefined when no entry carries the LogGuid: a writer stopped between setting the LogGuid and
 * flushing its first entry, so nothing was applied and there is nothing to replay (QEMU reads it so too).
 */
export async function planReplay(source: ByteSource, logOffset: number, logLength: number, logGuid: string): Promise<ReplayPlan | undefined> {
  const file = source.name;
  if (logLength > MAX_REPLAY_LOG_LENGTH) {
    throw new DiskchainError('UNSUPPORTED', `dirty log of ${logLength} bytes is larger than the ${MAX_REPLAY_LOG_LENGTH} we replay`, { file, offset: logOffset });
  }
  const log = new Uint8Array(logLength);
  await source.read(log, logOffset);
  const fileSize = await source.size();
  const cache = new Map<number, ValidEntry | null>();
  const entryAt = (at: number): ValidEntry | null => {
    if (!cache.has(at)) cache.set(at, validateEntry(log, at, logGuid, logOffset, file));
    return cache.get(at)!;
  };

  let candidate: ValidEntry[] = [];
  let tail = 0;
  let oldTail = 0;
  for (let steps = 0; steps <= logLength / LOG_SECTOR; steps++) {
    const current: ValidEntry[] = [];
    let head = tail;
    while (current.length < logLength / LOG_SECTOR) {
      const e = entryAt(head);
      if (!e) break;
      const last = current[current.length - 1];
      if (last && e.header.sequenceNumber !== last.header.sequenceNumber + 1n) break;
      current.push(e);
      head = (head + e.header.entryLength) % logLength;
    }
    const headEntry = current[current.length - 1];
    const tailIndex = headEntry ? current.findIndex((e) => e.at === headEntry.header.tail) : -1;
    const valid = tailIndex >= 0;
    if (valid && (candidate.length === 0 || headEntry!.header.sequenceNumber > candidate[candidate.length - 1]!.header.sequenceNumber)) {
      candidate = current.slice(tailIndex);
    }
    tail = valid ? head : (tail + LOG_SECTOR) % logLength;
    if (tail <= oldTail) break;
    oldTail = tail;
  }

  const head = candidate[candidate.length - 1];
  if (!head) return undefined;
  const flushed = toSafeNumber(head.header.flushedFileOffset, 'log FlushedFileOffset', file, logOffset + head.at + 48);
  const last = toSafeNumber(head.header.lastFileOffset, 'log LastFileOffset', file, logOffset + head.at + 56);
  if (flushed > fileSize) {
    throw corrupt(`file is truncated: the log says ${flushed} bytes were flushed but the file has ${fileSize}`, file, logOffset + head.at);
  }
  if (last > MAX_FILE_SIZE) throw corrupt(`log LastFileOffset ${last} is absurd`, file, logOffset + head.at + 56);
  const writes = candidate.flatMap((e) => e.writes);
  for (const w of writes) {
    const overlapsLog = w.offset < logOffset + logLength && w.offset + w.length > logOffset;
    if (w.offset < PROTECTED_END || overlapsLog || w.offset + w.length > Math.max(last, fileSize)) {
      throw corrupt(`log entry targets bytes ${w.offset}..${w.offset + w.length}, which it may not write`, file, logOffset + head.at);
    }
  }
  return { writes, minimumFileSize: last, headSequence: head.header.sequenceNumber, entryCount: candidate.length };
}

/** Reads `n` bytes of the circular log starting at `at`, wrapping at the end. */
function circular(log: Uint8Array, at: number, n: number): Uint8Array {
  if (at + n <= log.length) return log.subarray(at, at + n);
  const out = new Uint8Array(n);
  const first = log.length - at;
  out.set(log.subarray(at), 0);
  out.set(log.subarray(0, n - first), first);
  return out;
}

/** §2.3.1 Every field of an entry checked; returns its writes or null when invalid. */
function validateEntry(log: Uint8Array, at: number, logGuid: string, logOffset: number, file: string): ValidEntry | null {
  const header = decodeEntryHeader(log.subarray(at, at + LOG_SECTOR));
  if (!header) return null;
  const { entryLength, descriptorCount, sequenceNumber } = header;
  if (entryLength === 0 || entryLength % LOG_SECTOR !== 0 || entryLength > log.length) return null;
  if (sequenceNumber === 0n || header.logGuid !== logGuid || header.tail % LOG_SECTOR !== 0 || header.tail >= log.length) return null;
  const headerSectors = descriptorSectors(descriptorCount);
  if (headerSectors * LOG_SECTOR > entryLength) return null;
  const entry = circular(log, at, entryLength);
  if (entryChecksum(entry) !== header.checksum) return null;
  const writes: OverlayWrite[] = [];
  let dataSector = headerSectors;
  for (let i = 0; i < descriptorCount; i++) {
    const d = decodeDescriptor(entry, i);
    if (!d || d.sequenceNumber !== sequenceNumber || d.fileOffset % BigInt(LOG_SECTOR) !== 0n) return null;
    const offset = toSafeNumber(d.fileOffset, 'log descriptor FileOffset', file, logOffset + at);
    if (d.kind === 'zero') {
      if (d.zeroLength % BigInt(LOG_SECTOR) !== 0n) return null;
      writes.push({ offset, length: toSafeNumber(d.zeroLength, 'log zero length', file, logOffset + at) });
      continue;
    }
    if ((dataSector + 1) * LOG_SECTOR > entryLength) return null;
    const sector = entry.subarray(dataSector * LOG_SECTOR, (dataSector + 1) * LOG_SECTOR);
    if (dataSectorSequence(sector) !== sequenceNumber) return null;
    writes.push({ offset, length: LOG_SECTOR, data: rebuildPage(d, sector) });
    dataSector++;
  }
  return { at, header, writes };
}
