// Raw HTTP requests to a console (node:http, so Host, Origin and cookies are exactly what the test says),
// and the job stream read as server-sent events.
import { request as httpRequest } from 'node:http';

export interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: () => any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

export interface RequestOptions {
  headers?: Record<string, string>;
  body?: string | object;
}

export function request(port: number, method: string, path: string, options: RequestOptions = {}): Promise<Reply> {
  const body = options.body === undefined ? undefined : typeof options.body === 'string' ? options.body : JSON.stringify(options.body);
  const headers: Record<string, string> = { host: `127.0.0.1:${port}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...options.headers };
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, method, path, headers, setHost: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, text, json: () => JSON.parse(text) }));
    });
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

/** A client that sends the token as the page does: in the header (and the cookie). */
export function client(port: number, token: string) {
  const auth = { 'x-diskchain-token': token, cookie: `diskchain-token-${port}=${token}` };
  return {
    get: (path: string) => request(port, 'GET', path, { headers: auth }),
    post: (path: string, body: object = {}) => request(port, 'POST', path, { headers: { ...auth, origin: `http://127.0.0.1:${port}` }, body }),
  };
}

export interface SseEvent {
  event: string;
  data: any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

/** Reads /api/events until `until` returns true for an event (or the timeout); returns every event seen. */
export function readEvents(port: number, token: string, until: (e: SseEvent, all: SseEvent[]) => boolean, timeoutMs = 60_000, onEvent?: (e: SseEvent) => void): Promise<SseEvent[]> {
  return new Promise((resolve, reject) => {
    const events: SseEvent[] = [];
    const req = httpRequest({ host: '127.0.0.1', port, path: '/api/events', headers: { cookie: `diskchain-token-${port}=${token}` } }, (res) => {
      if (res.statusCode !== 200) return reject(new Error(`events: HTTP ${res.statusCode}`));
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        buf += d;
        let at: number;
        while ((at = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, at);
          buf = buf.slice(at + 2);
          const event = /^event: (.*)$/m.exec(block)?.[1];
          const data = /^data: (.*)$/m.exec(block)?.[1];
          if (!event || data === undefined) continue;
          const e = { event, data: JSON.parse(data) };
          events.push(e);
          onEvent?.(e);
          if (until(e, events)) {
            clearTimeout(timer);
            req.destroy();
            return resolve(events);
          }
        }
      });
    });
    const timer = setTimeout(() => {
      req.destroy();
      reject(new Error(`events: timed out after ${events.length} event(s)`));
    }, timeoutMs);
    req.on('error', (e) => {
      if (!req.destroyed) reject(e);
    });
    req.end();
  });
}
