/**
 * The transmission phase (doc/proto.md "Transmission" and "Request types"). One loop reads requests in
 * order; each is handled on its own and answered when done, so many are in flight and replies go out in
 * any order. The loop waits for the connection's budget before reading on (a WRITE's payload only once
 * its bytes are granted), which bounds what a connection holds whatever the client sends.
 * Bad requests get an error reply; only what would desynchronise the stream (a bad magic, a WRITE larger
 * than the advertised maximum payload) ends the connection.
 */
import type { NbdConnection } from './connection.js';
import { nbdErrorFor } from './errors.js';
import type { Session } from './handshake.js';
import {
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_CACHE,
  NBD_CMD_DISC,
  NBD_CMD_FLAG_DF,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_NO_HOLE,
  NBD_CMD_FLAG_REQ_ONE,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_EINVAL,
  NBD_ENOSPC,
  NBD_EOVERFLOW,
  NBD_EPERM,
  NBD_REQUEST_MAGIC,
  NBD_STATE_HOLE,
  NBD_STATE_ZERO,
  REQUEST_SIZE,
} from './protocol.js';
import { blockStatusChunk, decodeRequest, errorChunk, noneChunk, offsetDataHeader, simpleReply, type Request } from './wire.js';

/** Descriptors in one base:allocation reply (the protocol asks for at most 2^20; 64 KiB of reply here). */
const MAX_EXTENTS = 8192;

/** Command flags each request type accepts ("Command flags"); FUA is valid on all of them. */
const ALLOWED_FLAGS: Record<number, number> = {
  [NBD_CMD_READ]: NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_DF,
  [NBD_CMD_WRITE]: NBD_CMD_FLAG_FUA,
  [NBD_CMD_FLUSH]: NBD_CMD_FLAG_FUA,
  [NBD_CMD_TRIM]: NBD_CMD_FLAG_FUA,
  [NBD_CMD_CACHE]: NBD_CMD_FLAG_FUA,
  [NBD_CMD_WRITE_ZEROES]: NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE,
  [NBD_CMD_BLOCK_STATUS]: NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_REQ_ONE,
};

const WRITES = new Set([NBD_CMD_WRITE, NBD_CMD_TRIM, NBD_CMD_WRITE_ZEROES]);

/** Serves requests until NBD_CMD_DISC, the end of the stream or a violation; handlers may still run after. */
export async function transmit(conn: NbdConnection, s: Session): Promise<void> {
  for (;;) {
    let r: Request;
    try {
      r = decodeRequest(await conn.reader.read(REQUEST_SIZE));
    } catch {
      return; // the client closed (a half-close still gets the replies in flight) or the server stops
    }
    if (r.magic !== NBD_REQUEST_MAGIC) return conn.violation(`bad request magic 0x${r.magic.toString(16)}`);
    if (r.type === NBD_CMD_DISC) return;
    if (r.type === NBD_CMD_WRITE) {
      if (r.length > conn.limits.maxPayload) {
        // Its payload cannot be skipped without reading it: answer, then end the session (nothing of it is read).
        conn.send([reply(s, r, NBD_EOVERFLOW, `a write is limited to ${conn.limits.maxPayload} bytes`)]);
        return conn.finishAfterReplies(`write of ${r.length} bytes`);
      }
      if (!(await conn.budget.acquire(r.length))) return;
      let payload: Buffer;
      try {
        payload = await conn.reader.read(r.length);
      } catch {
        conn.budget.release(r.length);
        return;
      }
      conn.track(handle(conn, s, r, payload, r.length));
    } else {
      const held = r.type === NBD_CMD_READ && r.length <= conn.limits.maxPayload ? r.length : 0;
      if (!(await conn.budget.acquire(held))) return;
      conn.track(handle(conn, s, r, undefined, held));
    }
  }
}

/** Handles one request and sends its reply; `held` budget bytes are released once the reply has left. */
async function handle(conn: NbdConnection, s: Session, r: Request, payload: Buffer | undefined, held: number): Promise<void> {
  const exp = s.export;
  const problem = check(conn, s, r);
  if (problem) return conn.send([reply(s, r, problem[0], problem[1])], held);
  try {
    switch (r.type) {
      case NBD_CMD_READ: {
        const data = Buffer.allocUnsafe(r.length);
        await exp.read(data, r.offset);
        if (!s.structured) return conn.send([simpleReply(r.cookie, 0), data], held);
        return conn.send(r.length === 0 ? [noneChunk(r.cookie)] : [offsetDataHeader(r.cookie, r.offset, r.length), data], held);
      }
      case NBD_CMD_WRITE:
        await exp.write(payload!, r.offset);
        break;
      case NBD_CMD_WRITE_ZEROES:
        await exp.writeZeroes(r.offset, r.length, (r.flags & NBD_CMD_FLAG_NO_HOLE) === 0);
        break;
      case NBD_CMD_TRIM:
        await exp.trim(r.offset, r.length);
        break;
      case NBD_CMD_FLUSH:
        await exp.flush();
        break;
      case NBD_CMD_CACHE:
        break; // a hint; nothing to prepare
      case NBD_CMD_BLOCK_STATUS:
        return conn.send([await blockStatus(s, r)], held);
    }
    // "Ordering of messages and writes": a FUA change is durable before its reply.
    if (r.flags & NBD_CMD_FLAG_FUA && WRITES.has(r.type)) await exp.flush();
    conn.send([reply(s, r, 0)], held);
  } catch (e) {
    const [error, message] = nbdErrorFor(e);
    if (error !== NBD_EINVAL) conn.ctx.log(`${conn.id}: command ${r.type} at ${r.offset}+${r.length}: ${e instanceof Error ? e.message : String(e)}`);
    conn.send([reply(s, r, error, message)], held);
  }
}

/** The error a request earns before it runs ("Error values"), or undefined when it may run. */
function check(conn: NbdConnection, s: Session, r: Request): [number, string] | undefined {
  const allowed = ALLOWED_FLAGS[r.type];
  if (allowed === undefined) return [NBD_EINVAL, `unknown command ${r.type}`];
  if (r.flags & ~allowed || (r.flags & NBD_CMD_FLAG_DF && !s.structured)) return [NBD_EINVAL, `command flags 0x${r.flags.toString(16)} are not valid for command ${r.type}`];
  const exp = s.export;
  if (r.type === NBD_CMD_FLUSH) return r.offset !== 0 || r.length !== 0 ? [NBD_EINVAL, 'a flush has no offset or length'] : undefined;
  if (r.offset + r.length > exp.size) {
    const beyond = `${r.offset}+${r.length} is beyond the end of the export (${exp.size} bytes)`;
    return [r.type === NBD_CMD_WRITE || r.type === NBD_CMD_WRITE_ZEROES ? NBD_ENOSPC : NBD_EINVAL, beyond];
  }
  if (WRITES.has(r.type) && exp.readOnly) return [NBD_EPERM, 'the export is read-only'];
  if (r.type === NBD_CMD_READ && r.length > conn.limits.maxPayload) {
    return [s.structured ? NBD_EOVERFLOW : NBD_EINVAL, `a read is limited to ${conn.limits.maxPayload} bytes`];
  }
  if (r.type === NBD_CMD_BLOCK_STATUS) {
    if (s.allocationContext === undefined) return [NBD_EINVAL, 'no metadata context was selected (NBD_OPT_SET_META_CONTEXT)'];
    if (r.length === 0) return [NBD_EINVAL, 'a block status query needs a length'];
  }
  return undefined;
}

/** base:allocation for the range: one descriptor with NBD_CMD_FLAG_REQ_ONE, else up to MAX_EXTENTS. */
async function blockStatus(s: Session, r: Request): Promise<Buffer> {
  const one = (r.flags & NBD_CMD_FLAG_REQ_ONE) !== 0;
  const extents = await s.export.allocation(r.offset, r.length, one ? 1 : MAX_EXTENTS);
  const descriptors = extents.map((e) => ({
    length: Math.min(e.length, r.length),
    flags: (e.hole ? NBD_STATE_HOLE : 0) | (e.zero ? NBD_STATE_ZERO : 0),
  }));
  return blockStatusChunk(r.cookie, s.allocationContext!, descriptors);
}

/** A reply without payload: NBD_REPLY_TYPE_NONE or _ERROR when structured, else a simple reply. */
function reply(s: Session, r: Request, error: number, message = ''): Buffer {
  if (!s.structured) return simpleReply(r.cookie, error);
  return error === 0 ? noneChunk(r.cookie) : errorChunk(r.cookie, error, message);
}
