/**
 * Fixed newstyle negotiation (doc/proto.md "Handshake" and "Option types"): the server's greeting, the
 * client's flags, then options until one enters transmission (NBD_OPT_GO, NBD_OPT_EXPORT_NAME) or ends
 * the session (NBD_OPT_ABORT). Every option but NBD_OPT_EXPORT_NAME gets a reply; an option this server
 * does not know gets NBD_REP_ERR_UNSUP and the next one is read. With TLS configured the server runs in
 * FORCEDTLS mode: before NBD_OPT_STARTTLS only NBD_OPT_ABORT is served.
 */
import type { NbdConnection } from './connection.js';
import type { NbdExport } from './export.js';
import {
  BASE_ALLOCATION,
  IHAVEOPT,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_FLAG_CAN_MULTI_CONN,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_HAS_FLAGS,
  NBD_FLAG_NO_ZEROES,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_DF,
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_FUA,
  NBD_FLAG_SEND_TRIM,
  NBD_FLAG_SEND_WRITE_ZEROES,
  NBD_INFO_DESCRIPTION,
  NBD_INFO_NAME,
  NBD_MAX_STRING,
  NBD_OPT_ABORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPT_INFO,
  NBD_OPT_LIST,
  NBD_OPT_LIST_META_CONTEXT,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STARTTLS,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REP_ACK,
  NBD_REP_ERR_INVALID,
  NBD_REP_ERR_POLICY,
  NBD_REP_ERR_TLS_REQD,
  NBD_REP_ERR_TOO_BIG,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
  NBD_REP_INFO,
  NBD_REP_META_CONTEXT,
  NBD_REP_SERVER,
  NBDMAGIC,
  OPTION_HEADER_SIZE,
} from './protocol.js';
import { infoBlockSize, infoExport, infoString, metaContextEntry, optionReply, serverEntry } from './wire.js';

/** What the handshake settled, for the transmission phase. */
export interface Session {
  export: NbdExport;
  structured: boolean;
  /** The id of base:allocation when the client selected it for this export (NBD_OPT_SET_META_CONTEXT). */
  allocationContext: number | undefined;
}

/** The id this server gives base:allocation, its one metadata context. */
const ALLOCATION_CONTEXT_ID = 1;
const KNOWN_CLIENT_FLAGS = NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES;

/** Negotiation state that NBD_OPT_STARTTLS discards. */
interface State {
  structured: boolean;
  meta: { export: NbdExport; selected: boolean } | undefined;
}

/** Runs the handshake; resolves with the session to serve, or undefined when the session ends here. */
export async function negotiate(conn: NbdConnection): Promise<Session | undefined> {
  const greeting = Buffer.alloc(18);
  greeting.writeBigUInt64BE(NBDMAGIC, 0);
  greeting.writeBigUInt64BE(IHAVEOPT, 8);
  greeting.writeUInt16BE(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES, 16);
  await conn.sendAndWait([greeting]);
  const clientFlags = (await conn.reader.read(4)).readUInt32BE(0);
  if (clientFlags & ~KNOWN_CLIENT_FLAGS) return void conn.violation(`unknown client flags 0x${clientFlags.toString(16)}`);
  const noZeroes = (clientFlags & NBD_FLAG_C_NO_ZEROES) !== 0;
  // TLS needs fixed newstyle ("TLS support"); without it this client cannot reach a FORCEDTLS export.
  if (conn.ctx.tls && !(clientFlags & NBD_FLAG_C_FIXED_NEWSTYLE)) return void conn.violation('TLS is required and the client does not speak fixed newstyle');

  let state: State = { structured: false, meta: undefined };
  for (;;) {
    const header = await conn.reader.read(OPTION_HEADER_SIZE);
    if (header.readBigUInt64BE(0) !== IHAVEOPT) return void conn.violation('bad option magic');
    const option = header.readUInt32BE(8);
    const length = header.readUInt32BE(12);
    if (length > conn.limits.maxOptionLength) {
      await conn.sendAndWait([optionReply(option, NBD_REP_ERR_TOO_BIG, text(`options are limited to ${conn.limits.maxOptionLength} bytes`))]);
      return void conn.violation(`option ${option} of ${length} bytes`);
    }
    const data = await conn.reader.read(length);
    const reply = (type: number, payload?: Uint8Array): Promise<void> => conn.sendAndWait([optionReply(option, type, payload)]);

    if (conn.ctx.tls && !conn.tls && option !== NBD_OPT_STARTTLS && option !== NBD_OPT_ABORT) {
      if (option === NBD_OPT_EXPORT_NAME) return void conn.violation('NBD_OPT_EXPORT_NAME before TLS');
      await reply(NBD_REP_ERR_TLS_REQD, text('this server requires TLS (NBD_OPT_STARTTLS) first'));
      continue;
    }
    switch (option) {
      case NBD_OPT_EXPORT_NAME: {
        const exp = conn.ctx.findExport(data.toString('utf8'));
        if (!exp) return void conn.violation(`NBD_OPT_EXPORT_NAME names no export`);
        const answer = Buffer.alloc(noZeroes ? 10 : 134);
        answer.writeBigUInt64BE(BigInt(exp.size), 0);
        answer.writeUInt16BE(transmissionFlags(exp, state.structured), 8);
        await conn.sendAndWait([answer]);
        return session(exp, state);
      }
      case NBD_OPT_ABORT:
        await reply(NBD_REP_ACK).catch(() => undefined);
        return undefined;
      case NBD_OPT_LIST:
        if (length !== 0) await reply(NBD_REP_ERR_INVALID, text('NBD_OPT_LIST takes no data'));
        else {
          await conn.sendAndWait(conn.ctx.listExports().map((e) => optionReply(option, NBD_REP_SERVER, serverEntry(e.name))));
          await reply(NBD_REP_ACK);
        }
        break;
      case NBD_OPT_STARTTLS:
        if (!conn.ctx.tls) await reply(NBD_REP_ERR_POLICY, text('TLS is not configured on this server'));
        else if (conn.tls || length !== 0) await reply(NBD_REP_ERR_INVALID, text(conn.tls ? 'TLS is already active' : 'NBD_OPT_STARTTLS takes no data'));
        else {
          await reply(NBD_REP_ACK);
          await conn.startTls();
          state = { structured: false, meta: undefined };
        }
        break;
      case NBD_OPT_INFO:
      case NBD_OPT_GO: {
        const chosen = await infoOrGo(conn, option, data, state);
        if (chosen && option === NBD_OPT_GO) return session(chosen, state);
        break;
      }
      case NBD_OPT_STRUCTURED_REPLY:
        if (length !== 0) await reply(NBD_REP_ERR_INVALID, text('NBD_OPT_STRUCTURED_REPLY takes no data'));
        else {
          state.structured = true;
          await reply(NBD_REP_ACK);
        }
        break;
      case NBD_OPT_LIST_META_CONTEXT:
      case NBD_OPT_SET_META_CONTEXT:
        await metaContext(conn, option, data, state);
        break;
      default:
        await reply(NBD_REP_ERR_UNSUP, text(`option ${option} is not supported`));
    }
  }
}

function session(exp: NbdExport, state: State): Session {
  const selected = state.structured && state.meta?.export === exp && state.meta.selected;
  return { export: exp, structured: state.structured, allocationContext: selected ? ALLOCATION_CONTEXT_ID : undefined };
}

/** "Transmission flags": what this export offers. */
export function transmissionFlags(exp: NbdExport, structured: boolean): number {
  let flags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA | NBD_FLAG_CAN_MULTI_CONN;
  flags |= exp.readOnly ? NBD_FLAG_READ_ONLY : NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES;
  if (structured) flags |= NBD_FLAG_SEND_DF;
  return flags;
}

/** NBD_OPT_INFO and NBD_OPT_GO: name length, name, count of information requests, the requests. */
async function infoOrGo(conn: NbdConnection, option: number, data: Buffer, state: State): Promise<NbdExport | undefined> {
  const reply = (type: number, payload?: Uint8Array): Promise<void> => conn.sendAndWait([optionReply(option, type, payload)]);
  const nameLength = data.length >= 6 ? data.readUInt32BE(0) : -1;
  if (nameLength < 0 || nameLength > data.length - 6) return void (await reply(NBD_REP_ERR_INVALID, text('malformed request')));
  const count = data.readUInt16BE(4 + nameLength);
  if (4 + nameLength + 2 + 2 * count !== data.length) return void (await reply(NBD_REP_ERR_INVALID, text('malformed information requests')));
  const name = data.toString('utf8', 4, 4 + nameLength);
  const exp = conn.ctx.findExport(name);
  if (!exp) return void (await reply(NBD_REP_ERR_UNKNOWN, text(`no export named "${name.slice(0, 256)}"`)));
  const requested = new Set<number>();
  for (let i = 0; i < count; i++) requested.add(data.readUInt16BE(4 + nameLength + 2 + 2 * i));
  const infos = [
    infoExport(exp.size, transmissionFlags(exp, state.structured)),
    // "Size constraints": any alignment (unaligned writes are completed from the chain), the backend's
    // efficient size, and the payload limit. Sent whether asked or not; clients ignore what they did not ask.
    infoBlockSize(1, exp.backend.preferredBlockSize, conn.limits.maxPayload),
  ];
  if (requested.has(NBD_INFO_NAME)) infos.push(infoString(NBD_INFO_NAME, exp.name));
  if (requested.has(NBD_INFO_DESCRIPTION) && exp.description) infos.push(infoString(NBD_INFO_DESCRIPTION, exp.description));
  await conn.sendAndWait([...infos.map((i) => optionReply(option, NBD_REP_INFO, i)), optionReply(option, NBD_REP_ACK)]);
  return exp;
}

/**
 * NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT: export name, then queries. base:allocation is
 * the one context; "base:" lists it (and selects nothing); queries in other namespaces are ignored.
 */
async function metaContext(conn: NbdConnection, option: number, data: Buffer, state: State): Promise<void> {
  const reply = (type: number, payload?: Uint8Array): Promise<void> => conn.sendAndWait([optionReply(option, type, payload)]);
  const set = option === NBD_OPT_SET_META_CONTEXT;
  if (set) state.meta = undefined; // "replaces all previously-set metadata contexts (including when this command fails)"
  if (!state.structured) return reply(NBD_REP_ERR_INVALID, text('negotiate NBD_OPT_STRUCTURED_REPLY first'));
  const parsed = parseQueries(data);
  if (!parsed) return reply(NBD_REP_ERR_INVALID, text('malformed request'));
  const exp = conn.ctx.findExport(parsed.name);
  if (!exp) return reply(NBD_REP_ERR_UNKNOWN, text(`no export named "${parsed.name.slice(0, 256)}"`));
  if (parsed.queries.some((q) => !q.includes(':'))) return reply(NBD_REP_ERR_INVALID, text('a query lacks its namespace'));
  const matches = set
    ? parsed.queries.includes(BASE_ALLOCATION)
    : parsed.queries.length === 0 || parsed.queries.some((q) => q === 'base:' || q === BASE_ALLOCATION);
  if (set) state.meta = { export: exp, selected: matches };
  const id = set ? ALLOCATION_CONTEXT_ID : 0;
  await conn.sendAndWait([...(matches ? [optionReply(option, NBD_REP_META_CONTEXT, metaContextEntry(id, BASE_ALLOCATION))] : []), optionReply(option, NBD_REP_ACK)]);
}

/** Export name length, name, query count, then (length, query) pairs; undefined unless it parses exactly. */
function parseQueries(data: Buffer): { name: string; queries: string[] } | undefined {
  if (data.length < 8) return undefined;
  const nameLength = data.readUInt32BE(0);
  if (nameLength > data.length - 8 || nameLength > NBD_MAX_STRING) return undefined;
  const name = data.toString('utf8', 4, 4 + nameLength);
  const count = data.readUInt32BE(4 + nameLength);
  const queries: string[] = [];
  let at = 8 + nameLength;
  for (let i = 0; i < count; i++) {
    if (at + 4 > data.length) return undefined;
    const n = data.readUInt32BE(at);
    if (n > data.length - at - 4) return undefined;
    queries.push(data.toString('utf8', at + 4, at + 4 + n));
    at += 4 + n;
  }
  return at === data.length ? { name, queries } : undefined;
}

function text(message: string): Buffer {
  return Buffer.from(message, 'utf8');
}
