// The console's guard, checked on every request before any route runs (the rules in docs/console.md):
//  1. Host must name this server (a loopback name, or the bound address): a page on another site whose
//     DNS name was re-pointed at 127.0.0.1 (DNS rebinding) sends its own name and is refused.
//  2. The request carries the per-start token: in the cookie the page received on first load
//     (SameSite=Strict, HttpOnly), in the X-Diskchain-Token header, or once in `?token=` (the printed URL).
//  3. A state-changing request (anything but GET/HEAD) carries the token in the header (a cross-site form
//     cannot set headers), and its Origin and Sec-Fetch-Site, when the browser sends them, are this server.
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { isIP } from 'node:net';
import { hostname, networkInterfaces } from 'node:os';
import { DiskchainError } from '../api/index.js';

export const TOKEN_HEADER = 'x-diskchain-token';

export function newToken(): string {
  return randomBytes(32).toString('base64url');
}

/** Cookies are shared by every port of a host, so the name carries the port: two consoles do not clash. */
export function cookieName(port: number): string {
  return `diskchain-token-${port}`;
}

export function sameToken(given: unknown, token: string): boolean {
  if (typeof given !== 'string' || given.length !== token.length) return false;
  return timingSafeEqual(Buffer.from(given), Buffer.from(token));
}

export function isLoopback(address: string): boolean {
  const a = address.toLowerCase().replace(/^\[|\]$/g, '');
  if (a === 'localhost' || a === '::1') return true;
  if (a.startsWith('::ffff:')) return isLoopback(a.slice(7));
  return isIP(a) === 4 && a.startsWith('127.');
}

/** The Host header values that name this server: `name:port` (and `name` alone on port 80). */
export function allowedHosts(bind: string, port: number): Set<string> {
  const names = new Set(['127.0.0.1', 'localhost', '[::1]']);
  const add = (address: string): void => {
    names.add(isIP(address) === 6 ? `[${address.toLowerCase()}]` : address.toLowerCase());
  };
  if (bind === '0.0.0.0' || bind === '::') {
    for (const list of Object.values(networkInterfaces())) for (const i of list ?? []) add(i.address);
    names.add(hostname().toLowerCase());
  } else if (!isLoopback(bind)) add(bind);
  const hosts = new Set<string>();
  for (const n of names) {
    hosts.add(`${n}:${port}`);
    if (port === 80) hosts.add(n);
  }
  return hosts;
}

export interface GuardRequest {
  method: string;
  headers: Record<string, string | string[] | undefined>;
  cookie: string | undefined;
  queryToken: string | undefined;
}

/** Throws FORBIDDEN when a request fails one of the rules above; returns how the token came. */
export function guard(req: GuardRequest, token: string, hosts: Set<string>): 'cookie' | 'header' | 'query' {
  const header = (name: string): string | undefined => {
    const v = req.headers[name];
    return Array.isArray(v) ? v[0] : v;
  };
  const host = header('host')?.toLowerCase();
  if (!host || !hosts.has(host)) {
    throw new DiskchainError('FORBIDDEN', `the Host header ${JSON.stringify(host ?? '')} does not name this console (a DNS-rebinding page would send its own name); open the URL the console printed`, { host: host ?? null });
  }
  const changes = req.method !== 'GET' && req.method !== 'HEAD';
  const site = header('sec-fetch-site');
  if (changes && site !== undefined && site !== 'same-origin' && site !== 'none') {
    throw new DiskchainError('FORBIDDEN', `a ${site} request may not change anything here`, { secFetchSite: site });
  }
  const origin = header('origin');
  if (changes && origin !== undefined && origin !== `http://${host}`) {
    throw new DiskchainError('FORBIDDEN', `requests from ${origin} may not change anything here`, { origin });
  }
  if (sameToken(header(TOKEN_HEADER), token)) return 'header';
  if (changes) throw new DiskchainError('FORBIDDEN', `a request that changes something must carry the console's token in the ${TOKEN_HEADER} header`);
  if (sameToken(req.cookie, token)) return 'cookie';
  if (sameToken(req.queryToken, token)) return 'query';
  throw new DiskchainError('FORBIDDEN', "this request does not carry the console's token: open the URL the console printed (it ends in ?token=...)");
}
