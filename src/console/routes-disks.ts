// Loose disks and space: a folder browser inside the roots, the disks of a folder with their chains
// (scanFolders, read-only), the space a merge of one needs (measureChain), and the free space of a
// file system. Read-only routes: they take the token from the cookie.
import { readdir, statfs } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { measureChain, openChain, scanFolders, type ScanTree } from '../api/index.js';
import type { ConsoleContext } from './server.js';

const pathQuery = { type: 'object', properties: { path: { type: 'string', maxLength: 4096 } }, additionalProperties: false } as const;
type PathQuery = { Querystring: { path?: string } };

/** Bounds of a scan started by a page view (the recovery page's job has the CLI's defaults). */
export const SCAN_LIMITS = { maxDepth: 8, maxFiles: 20_000 };

export interface Space {
  path: string;
  /** Bytes of the file system. */
  total: number;
  /** Bytes in use. */
  used: number;
  /** Bytes free for diskchain (an unprivileged writer). */
  available: number;
  /** Bytes free only for root (the file system's reserve). */
  reserved: number;
}

export async function spaceOf(path: string): Promise<Space> {
  const s = await statfs(path);
  return { path, total: s.blocks * s.bsize, used: (s.blocks - s.bfree) * s.bsize, available: s.bavail * s.bsize, reserved: (s.bfree - s.bavail) * s.bsize };
}

/** An AbortSignal that fires when the client goes away. */
export function requestSignal(req: FastifyRequest): AbortSignal {
  const controller = new AbortController();
  req.raw.on('close', () => controller.abort());
  return controller.signal;
}

export interface DiskFolder {
  folder: string;
  disks: Array<ScanTree['nodes'][number] & { name: string; chain: string[] }>;
}

export function registerDiskRoutes(app: FastifyInstance, { roots }: ConsoleContext): void {
  app.get<PathQuery>('/api/browse', { schema: { querystring: pathQuery } }, async (req) => {
    const path = await roots.existing(req.query.path ?? roots.paths[0]);
    const entries = await readdir(path, { withFileTypes: true });
    const up = dirname(path);
    return {
      path,
      parent: path !== up && roots.rootOf(up) ? up : null,
      folders: entries.filter((e) => e.isDirectory()).map((e) => e.name).sort(),
      files: entries.filter((e) => e.isFile()).map((e) => e.name).sort(),
    };
  });

  app.get<PathQuery>('/api/space', { schema: { querystring: pathQuery } }, async (req) => spaceOf(await roots.existing(req.query.path ?? roots.paths[0])));

  app.get<PathQuery>('/api/disks', { schema: { querystring: pathQuery } }, async (req) => {
    const folders = req.query.path ? [await roots.existing(req.query.path)] : roots.paths;
    const report = await scanFolders(folders, { ...SCAN_LIMITS, signal: requestSignal(req) });
    const byFolder = new Map<string, DiskFolder>();
    for (const tree of report.trees) {
      const byPath = new Map(tree.nodes.map((n) => [n.path, n]));
      for (const node of tree.nodes) {
        const chain = [node.path];
        for (let at = node.parent; at !== null; at = byPath.get(at)!.parent) chain.push(at);
        const folder = dirname(node.path);
        const entry = byFolder.get(folder) ?? { folder, disks: [] };
        entry.disks.push({ ...node, name: node.path.slice(folder.length + 1), chain });
        byFolder.set(folder, entry);
      }
    }
    const list = [...byFolder.values()].sort((a, b) => (a.folder < b.folder ? -1 : 1));
    for (const f of list) f.disks.sort((a, b) => (a.name < b.name ? -1 : 1));
    const spaces = await Promise.all([...new Set(list.map((f) => f.folder))].map((f) => spaceOf(f)));
    return { folders: list, spaces, orphans: report.orphans, problems: report.problems, summary: report.summary };
  });

  app.get<PathQuery>('/api/measure', { schema: { querystring: pathQuery } }, async (req) => {
    const path = await roots.existing(req.query.path);
    const chain = await openChain(path, { searchPaths: roots.paths });
    try {
      return await measureChain(chain, { signal: requestSignal(req) });
    } finally {
      await chain.close();
    }
  });
}
