import { asciiAt, toSafeNumber, view, writeAscii } from '../../io/binary.js';
import { crc32cWithZeroedField } from '../../io/crc32c.js';
import { guidToString, writeGuid } from '../../io/guid.js';

/** §2.2.2 Headers: two 4 KiB copies at 64 KiB and 128 KiB; the valid one with the higher sequence is current. */
export const HEADER_OFFSETS = [64 * 1024, 128 * 1024] as const;
export const HEADER_SIZE = 4096;
const SIGNATURE = 'head';

export interface VhdxHeader {
  sequenceNumber: bigint;
  fileWriteGuid: string;
  dataWriteGuid: string;
  logGuid: string;
  logVersion: number;
  version: number;
  logLength: number;
  logOffset: number;
}

export type HeaderDecode = { ok: true; header: VhdxHeader } | { ok: false; reason: string };

export function decodeHeader(buf: Uint8Array, file: string, offset: number): HeaderDecode {
  if (asciiAt(buf, 0, 4) !== SIGNATURE) return { ok: false, reason: 'signature is not "head"' };
  const dv = view(buf);
  const stored = dv.getUint32(4, true);
  const computed = crc32cWithZeroedField(buf.subarray(0, HEADER_SIZE), 4);
  if (stored !== computed) return { ok: false, reason: `checksum mismatch (stored 0x${stored.toString(16)}, computed 0x${computed.toString(16)})` };
  return {
    ok: true,
    header: {
      sequenceNumber: dv.getBigUint64(8, true),
      fileWriteGuid: guidToString(buf, 16),
      dataWriteGuid: guidToString(buf, 32),
      logGuid: guidToString(buf, 48),
      logVersion: dv.getUint16(64, true),
      version: dv.getUint16(66, true),
      logLength: dv.getUint32(68, true),
      logOffset: toSafeNumber(dv.getBigUint64(72, true), 'header LogOffset', file, offset + 72),
    },
  };
}

export function encodeHeader(h: VhdxHeader): Uint8Array {
  const buf = new Uint8Array(HEADER_SIZE);
  const dv = view(buf);
  writeAscii(buf, 0, SIGNATURE);
  dv.setBigUint64(8, h.sequenceNumber, true);
  writeGuid(buf, 16, h.fileWriteGuid);
  writeGuid(buf, 32, h.dataWriteGuid);
  writeGuid(buf, 48, h.logGuid);
  dv.setUint16(64, h.logVersion, true);
  dv.setUint16(66, h.version, true);
  dv.setUint32(68, h.logLength, true);
  dv.setBigUint64(72, BigInt(h.logOffset), true);
  dv.setUint32(4, crc32cWithZeroedField(buf, 4), true);
  return buf;
}
