import { randomBytes } from 'node:crypto';

/**
 * A GUID in Microsoft's on-disk layout: Data1 (LE u32), Data2 (LE u16), Data3 (LE u16), Data4 (8 bytes).
 * The text form is the usual lowercase 8-4-4-4-12.
 */
export function guidToString(buf: Uint8Array, offset = 0): string {
  const b = buf.subarray(offset, offset + 16);
  const hex = (from: number, to: number, reverse: boolean): string => {
    const part = Array.from(b.subarray(from, to));
    if (reverse) part.reverse();
    return part.map((x) => x.toString(16).padStart(2, '0')).join('');
  };
  return `${hex(0, 4, true)}-${hex(4, 6, true)}-${hex(6, 8, true)}-${hex(8, 10, false)}-${hex(10, 16, false)}`;
}

const GUID_RE = /^\{?([0-9a-f]{8})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{12})\}?$/i;

export function isGuidString(text: string): boolean {
  return GUID_RE.test(text);
}

export function guidToBytes(text: string): Uint8Array {
  const m = GUID_RE.exec(text);
  if (!m) throw new TypeError(`not a GUID: ${text}`);
  const bytes = (hex: string, reverse: boolean): number[] => {
    const out = hex.match(/../g)!.map((h) => parseInt(h, 16));
    return reverse ? out.reverse() : out;
  };
  return Uint8Array.from([...bytes(m[1]!, true), ...bytes(m[2]!, true), ...bytes(m[3]!, true), ...bytes(m[4]!, false), ...bytes(m[5]!, false)]);
}

export function writeGuid(buf: Uint8Array, offset: number, text: string): void {
  buf.set(guidToBytes(text), offset);
}

export function randomGuid(): string {
  const b = randomBytes(16);
  b[7] = (b[7]! & 0x0f) | 0x40; // version 4 (Data3 high nibble; Data3 is little-endian)
  b[8] = (b[8]! & 0x3f) | 0x80;
  return guidToString(b);
}

export const NULL_GUID = '00000000-0000-0000-0000-000000000000';
