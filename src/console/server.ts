// The console's HTTP server: fastify, the guard (security.ts) in front of every route, the page and
// its bundled assets, and the API routes, each thin over the library (src/api).
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import cookie from '@fastify/cookie';
import { DiskchainError } from '../api/index.js';
import { loadAssets, type Assets } from './assets.js';
import { errorBody } from './http-errors.js';
import type { Jobs } from './jobs.js';
import type { Roots } from './roots.js';
import { registerDiskRoutes } from './routes-disks.js';
import { registerJobRoutes } from './routes-jobs.js';
import { registerRecoveryRoutes } from './routes-recovery.js';
import { registerVmActionRoutes } from './routes-vm-actions.js';
import { registerVmRoutes } from './routes-vms.js';
import { cookieName, guard } from './security.js';

export interface ConsoleContext {
  roots: Roots;
  jobs: Jobs;
  token: string;
  port: number;
  hosts: Set<string>;
  version: string;
}

/** Request bodies are small JSON objects (paths, names, ids). */
const BODY_LIMIT = 64 * 1024;

const SECURITY_HEADERS = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'cross-origin-resource-policy': 'same-origin',
};

export async function buildServer(ctx: ConsoleContext): Promise<FastifyInstance> {
  const assets = await loadAssets();
  const app = Fastify({
    logger: false,
    bodyLimit: BODY_LIMIT,
    forceCloseConnections: true,
    return503OnClosing: true,
    // A number where a path belongs is an error, not a path named "7"; an unknown field is an error too.
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false } },
  });
  await app.register(cookie, { hook: 'onRequest' });

  app.addHook('onRequest', async (req, reply) => {
    void reply.headers(SECURITY_HEADERS);
    const query = req.query as Record<string, unknown> | undefined;
    const by = guard(
      { method: req.method, headers: req.headers, cookie: req.cookies[cookieName(ctx.port)], queryToken: typeof query?.token === 'string' ? query.token : undefined },
      ctx.token,
      ctx.hosts,
    );
    // The printed URL's token becomes a cookie, and the address bar loses it (no token in history).
    if (by === 'query' && req.method === 'GET' && !req.url.startsWith('/api/')) {
      void reply.setCookie(cookieName(ctx.port), ctx.token, { httpOnly: true, sameSite: 'strict', path: '/' });
      return reply.redirect(req.url.split('?')[0]!, 303);
    }
  });

  app.setErrorHandler((e, req, reply) => sendError(req, reply, e));
  app.setNotFoundHandler((req, reply) => sendError(req, reply, new DiskchainError('NOT_FOUND', `no ${req.method} ${req.url.split('?')[0]} here`)));

  registerPage(app, ctx, assets);
  registerJobRoutes(app, ctx);
  registerDiskRoutes(app, ctx);
  registerRecoveryRoutes(app, ctx);
  registerVmRoutes(app, ctx);
  registerVmActionRoutes(app, ctx);
  return app;
}

function sendError(req: FastifyRequest, reply: FastifyReply, e: unknown): FastifyReply {
  const { status, body } = errorBody(e);
  if (req.method === 'GET' && req.url.split('?')[0] === '/') {
    // A person at a browser opening the page: a readable page, not JSON.
    const text = `${body.error.code}: ${body.error.message}`.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);
    return reply.code(status).type('text/html; charset=utf-8').send(`<!doctype html><meta charset="utf-8"><title>diskchain console</title><p>${text}</p>`);
  }
  return reply.code(status).type('application/json; charset=utf-8').send(body);
}

function registerPage(app: FastifyInstance, ctx: ConsoleContext, assets: Assets): void {
  app.get('/', async (_req, reply) => reply.type('text/html; charset=utf-8').header('cache-control', 'no-store').send(assets.page(ctx.token)));
  app.get('/assets/:name', async (req, reply) => {
    const file = assets.files.get((req.params as { name: string }).name);
    if (!file) throw new DiskchainError('NOT_FOUND', `no asset ${(req.params as { name: string }).name}`);
    return reply.type(file.type).header('cache-control', 'no-cache').send(file.body);
  });
  app.get('/api/session', async () => ({ version: ctx.version, roots: ctx.roots.paths }));
}
