// Jobs: list, one, cancel, and the server-sent event stream that carries every change to the page.
import type { FastifyInstance } from 'fastify';
import type { JobView } from './jobs.js';
import type { ConsoleContext } from './server.js';

const KEEPALIVE_MS = 15_000;

const idParams = { type: 'object', properties: { id: { type: 'string', maxLength: 64 } }, required: ['id'] } as const;

export function registerJobRoutes(app: FastifyInstance, { jobs }: ConsoleContext): void {
  app.get('/api/jobs', async () => ({ jobs: jobs.list() }));
  app.get<{ Params: { id: string } }>('/api/jobs/:id', { schema: { params: idParams } }, async (req) => ({ job: jobs.get(req.params.id) }));
  app.post<{ Params: { id: string } }>('/api/jobs/:id/cancel', { schema: { params: idParams } }, async (req) => ({ job: jobs.cancel(req.params.id) }));

  // Event stream: `jobs` (every job, on connect: the page re-attaches after a reload), then `job` per change.
  app.get('/api/events', (req, reply) => {
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, {
      ...(reply.getHeaders() as Record<string, string>),
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      connection: 'keep-alive',
    });
    const send = (event: string, data: unknown): void => {
      res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    };
    send('jobs', jobs.list());
    const unsubscribe = jobs.subscribe((view: JobView) => send('job', view));
    const keepalive = setInterval(() => res.write(': keep-alive\n\n'), KEEPALIVE_MS);
    req.raw.on('close', () => {
      clearInterval(keepalive);
      unsubscribe();
    });
  });
}
