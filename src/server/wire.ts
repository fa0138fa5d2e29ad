/**
 * The layouts of the NBD messages (doc/proto.md "Fixed newstyle negotiation", "Option reply types",
 * "Request message", "Simple reply message", "Structured reply chunk message", "Structured reply types"):
 * encoders for what the server sends, a decoder for the request header. Big-endian throughout.
 */
import {
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_EXPORT,
  NBD_REP_MAGIC,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_NONE,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_MAGIC,
  SIMPLE_REPLY_SIZE,
  STRUCTURED_REPLY_HEADER_SIZE,
} from './protocol.js';

/** An option reply: magic, the option answered, the reply type, the data's length, the data. */
export function optionReply(option: number, type: number, data: Uint8Array = new Uint8Array(0)): Buffer {
  const b = Buffer.allocUnsafe(20 + data.length);
  b.writeBigUInt64BE(NBD_REP_MAGIC, 0);
  b.writeUInt32BE(option, 8);
  b.writeUInt32BE(type, 12);
  b.writeUInt32BE(data.length, 16);
  b.set(data, 20);
  return b;
}

/** NBD_REP_INFO / NBD_INFO_EXPORT: size and transmission flags. */
export function infoExport(size: number, transmissionFlags: number): Buffer {
  const b = Buffer.allocUnsafe(12);
  b.writeUInt16BE(NBD_INFO_EXPORT, 0);
  b.writeBigUInt64BE(BigInt(size), 2);
  b.writeUInt16BE(transmissionFlags, 10);
  return b;
}

/** NBD_REP_INFO / NBD_INFO_BLOCK_SIZE: minimum, preferred and maximum payload sizes. */
export function infoBlockSize(minimum: number, preferred: number, maximum: number): Buffer {
  const b = Buffer.allocUnsafe(14);
  b.writeUInt16BE(NBD_INFO_BLOCK_SIZE, 0);
  b.writeUInt32BE(minimum, 2);
  b.writeUInt32BE(preferred, 6);
  b.writeUInt32BE(maximum, 10);
  return b;
}

/** NBD_REP_INFO with a string payload (NBD_INFO_NAME, NBD_INFO_DESCRIPTION). */
export function infoString(type: number, text: string): Buffer {
  return Buffer.concat([u16(type), Buffer.from(text, 'utf8')]);
}

/** NBD_REP_SERVER: the name's length, then the name. */
export function serverEntry(name: string): Buffer {
  const s = Buffer.from(name, 'utf8');
  return Buffer.concat([u32(s.length), s]);
}

/** NBD_REP_META_CONTEXT: the context id, then its name. */
export function metaContextEntry(id: number, name: string): Buffer {
  return Buffer.concat([u32(id), Buffer.from(name, 'utf8')]);
}

function u16(n: number): Buffer {
  const b = Buffer.allocUnsafe(2);
  b.writeUInt16BE(n, 0);
  return b;
}

function u32(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(n, 0);
  return b;
}

export interface Request {
  magic: number;
  flags: number;
  type: number;
  cookie: bigint;
  /** Past Number.MAX_SAFE_INTEGER it is clamped there (and then outside every export). */
  offset: number;
  length: number;
}

/** "Request message": magic, command flags, type, cookie, offset, length. */
export function decodeRequest(b: Uint8Array): Request {
  const v = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  const offset = v.readBigUInt64BE(16);
  return {
    magic: v.readUInt32BE(0),
    flags: v.readUInt16BE(4),
    type: v.readUInt16BE(6),
    cookie: v.readBigUInt64BE(8),
    offset: offset > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(offset),
    length: v.readUInt32BE(24),
  };
}

/** "Simple reply message": magic, error, cookie (the read's data follows when error is 0). */
export function simpleReply(cookie: bigint, error: number): Buffer {
  const b = Buffer.allocUnsafe(SIMPLE_REPLY_SIZE);
  b.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, 0);
  b.writeUInt32BE(error, 4);
  b.writeBigUInt64BE(cookie, 8);
  return b;
}

/** "Structured reply chunk message" header; `extra` more bytes of it are left for the caller. */
function chunk(cookie: bigint, flags: number, type: number, payloadLength: number, extra: number): Buffer {
  const b = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_SIZE + extra);
  b.writeUInt32BE(NBD_STRUCTURED_REPLY_MAGIC, 0);
  b.writeUInt16BE(flags, 4);
  b.writeUInt16BE(type, 6);
  b.writeBigUInt64BE(cookie, 8);
  b.writeUInt32BE(payloadLength, 16);
  return b;
}

/** NBD_REPLY_TYPE_NONE with NBD_REPLY_FLAG_DONE: the request succeeded. */
export function noneChunk(cookie: bigint): Buffer {
  return chunk(cookie, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, 0, 0);
}

/** The header and offset of a final NBD_REPLY_TYPE_OFFSET_DATA chunk; `dataLength` bytes follow it. */
export function offsetDataHeader(cookie: bigint, offset: number, dataLength: number): Buffer {
  const b = chunk(cookie, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_DATA, 8 + dataLength, 8);
  b.writeBigUInt64BE(BigInt(offset), STRUCTURED_REPLY_HEADER_SIZE);
  return b;
}

/** A final NBD_REPLY_TYPE_ERROR chunk: error, message length, message (cut to 4096 bytes). */
export function errorChunk(cookie: bigint, error: number, message: string): Buffer {
  const text = Buffer.from(message, 'utf8').subarray(0, 4096);
  const b = chunk(cookie, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, 6 + text.length, 6 + text.length);
  b.writeUInt32BE(error, STRUCTURED_REPLY_HEADER_SIZE);
  b.writeUInt16BE(text.length, STRUCTURED_REPLY_HEADER_SIZE + 4);
  b.set(text, STRUCTURED_REPLY_HEADER_SIZE + 6);
  return b;
}

/** A final NBD_REPLY_TYPE_BLOCK_STATUS chunk: the context id, then (length, flags) per extent. */
export function blockStatusChunk(cookie: bigint, contextId: number, extents: ReadonlyArray<{ length: number; flags: number }>): Buffer {
  const payload = 4 + 8 * extents.length;
  const b = chunk(cookie, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_BLOCK_STATUS, payload, payload);
  let at = STRUCTURED_REPLY_HEADER_SIZE;
  b.writeUInt32BE(contextId, at);
  for (const e of extents) {
    b.writeUInt32BE(e.length, (at += 4));
    b.writeUInt32BE(e.flags, (at += 4));
  }
  return b;
}
