import { randomBytes } from 'node:crypto';

/**
 * VHD Unique Ids (spec: Unique Id, Parent Unique ID) are 16 bytes shown in stored byte order
 * as 8-4-4-4-12 hex, which is how Windows tools, libvhdi and qemu print them.
 * (Not the mixed-endian Microsoft GUID layout of src/io/guid.ts.)
 */
export function uniqueIdToString(buf: Uint8Array, offset = 0): string {
  const hex = Array.from(buf.subarray(offset, offset + 16), (b) => b.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

const ID_RE = /^\{?([0-9a-f]{8})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{12})\}?$/i;

export function isUniqueIdString(text: string): boolean {
  return ID_RE.test(text);
}

export function uniqueIdToBytes(text: string): Uint8Array {
  const m = ID_RE.exec(text);
  if (!m) throw new TypeError(`not a unique id: ${text}`);
  const hex = m.slice(1).join('');
  const out = new Uint8Array(16);
  for (let i = 0; i < 16; i++) out[i] = parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return out;
}

/** A random RFC 4122 version 4 id. */
export function randomUniqueId(): string {
  const b = randomBytes(16);
  b[6] = (b[6]! & 0x0f) | 0x40;
  b[8] = (b[8]! & 0x3f) | 0x80;
  return uniqueIdToString(b);
}

export const NULL_UNIQUE_ID = '00000000-0000-0000-0000-000000000000';
