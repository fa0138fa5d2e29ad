import { view } from '../../io/binary.js';
import { corrupt } from '../../io/errors.js';
import { guidToString, writeGuid } from '../../io/guid.js';

/** §2.6.2.6 Parent locator: a type GUID and UTF-16LE key/value pairs. */
export const VHDX_LOCATOR_TYPE_GUID = 'b04aefb7-d19e-4a81-b789-25b8e9445913';
const HEADER_SIZE = 20;
const ENTRY_SIZE = 12;

export interface ParentLocator {
  locatorType: string;
  /** Entries in stored order; keys are unique. */
  entries: [string, string][];
}

export function decodeParentLocator(buf: Uint8Array, file: string, offset: number): ParentLocator {
  if (buf.length < HEADER_SIZE) throw corrupt('parent locator is shorter than its header', file, offset);
  const dv = view(buf);
  const locatorType = guidToString(buf, 0);
  const count = dv.getUint16(18, true);
  if (HEADER_SIZE + count * ENTRY_SIZE > buf.length) throw corrupt(`parent locator claims ${count} entries, more than fit in ${buf.length} bytes`, file, offset);
  const entries: [string, string][] = [];
  const keys = new Set<string>();
  const text = (at: number, len: number, what: string): string => {
    if (len === 0 || len % 2 !== 0 || at + len > buf.length) throw corrupt(`parent locator ${what} (offset ${at}, length ${len}) is invalid`, file, offset + at);
    return Buffer.from(buf.buffer, buf.byteOffset + at, len).toString('utf16le');
  };
  for (let i = 0; i < count; i++) {
    const at = HEADER_SIZE + i * ENTRY_SIZE;
    const key = text(dv.getUint32(at, true), dv.getUint16(at + 8, true), 'key');
    const value = text(dv.getUint32(at + 4, true), dv.getUint16(at + 10, true), 'value');
    if (keys.has(key)) throw corrupt(`parent locator key ${key} appears twice`, file, offset + at);
    keys.add(key);
    entries.push([key, value]);
  }
  return { locatorType, entries };
}

export function encodeParentLocator(locator: ParentLocator): Uint8Array {
  const strings = locator.entries.map(([k, v]) => [Buffer.from(k, 'utf16le'), Buffer.from(v, 'utf16le')] as const);
  let cursor = HEADER_SIZE + strings.length * ENTRY_SIZE;
  const total = strings.reduce((n, [k, v]) => n + k.length + v.length, cursor);
  const buf = new Uint8Array(total);
  const dv = view(buf);
  writeGuid(buf, 0, locator.locatorType);
  dv.setUint16(18, strings.length, true);
  strings.forEach(([k, v], i) => {
    const at = HEADER_SIZE + i * ENTRY_SIZE;
    dv.setUint32(at, cursor, true);
    buf.set(k, cursor);
    cursor += k.length;
    dv.setUint32(at + 4, cursor, true);
    buf.set(v, cursor);
    cursor += v.length;
    dv.setUint16(at + 8, k.length, true);
    dv.setUint16(at + 10, v.length, true);
  });
  return buf;
}

export function locatorValue(locator: ParentLocator, key: string): string | undefined {
  return locator.entries.find(([k]) => k === key)?.[1];
}
