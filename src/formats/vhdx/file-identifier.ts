import { asciiAt, utf16leAt, writeAscii } from '../../io/binary.js';

/** §2.2.1 File Type Identifier: the first 64 KiB; "vhdxfile" then a UTF-16 creator string. */
export const FILE_IDENTIFIER_SIGNATURE = 'vhdxfile';
export const FILE_IDENTIFIER_SIZE = 64 * 1024;

export interface FileIdentifier {
  creator: string;
}

export function hasFileIdentifierSignature(buf: Uint8Array): boolean {
  return buf.length >= 8 && asciiAt(buf, 0, 8) === FILE_IDENTIFIER_SIGNATURE;
}

export function decodeFileIdentifier(buf: Uint8Array): FileIdentifier {
  return { creator: utf16leAt(buf, 8, 512) };
}

export function encodeFileIdentifier(id: FileIdentifier): Uint8Array {
  const buf = new Uint8Array(FILE_IDENTIFIER_SIZE);
  writeAscii(buf, 0, FILE_IDENTIFIER_SIGNATURE);
  buf.set(Buffer.from(id.creator.slice(0, 255), 'utf16le'), 8);
  return buf;
}
