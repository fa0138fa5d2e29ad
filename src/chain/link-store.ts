import { appendFileSync, mkdirSync, realpathSync } from 'node:fs';
import { open, realpath } from 'node:fs/promises';
import { homedir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';

/**
 * Remembered parent links: child → parent pairs (real paths) that diskchain itself wrote across folders
 * (create --parent, reparent, rebase --onto, a merge's hand-over) or that the user confirmed by finding
 * the parent through --search-path. A parent outside the child's folder is accepted without
 * --search-path only when its pair is remembered here, and even then only if it carries the identity
 * the child recorded. The store only ever allows: losing it makes --search-path necessary again, never
 * opens anything. See docs/chains.md.
 *
 * One JSON object per line, appended (O_APPEND: concurrent writers never interleave a short line), so
 * no lock is needed and a torn last line is skipped on read. Appends are never flushed: a power cut may
 * lose the last lines or tear the last one, which only means --search-path again (docs/crash-safety.md
 * says why no state of the store can name a wrong parent).
 */

let storePath: string | null = null;

/** The largest tail of the store read; older lines beyond it are forgotten. */
const MAX_READ = 4 * 1024 * 1024;

/** Where the store is by default: $XDG_STATE_HOME/diskchain/links.jsonl (~/.local/state when unset). */
export function defaultLinkStorePath(): string {
  const state = process.env.XDG_STATE_HOME && process.env.XDG_STATE_HOME.startsWith('/') ? process.env.XDG_STATE_HOME : join(homedir(), '.local', 'state');
  return join(state, 'diskchain', 'links.jsonl');
}

/** Turns the store on for this process (the CLI does, with defaultLinkStorePath()); null, the library's default, turns it off. */
export function useLinkStore(path: string | null): void {
  storePath = path;
}

export function linkStorePath(): string | null {
  return storePath;
}

interface Link {
  child: string;
  parent: string;
}

/** The real path of `path`, or of its folder plus its name when the file does not exist yet. */
function realSync(path: string): string {
  const abs = resolve(path);
  try {
    return realpathSync(abs);
  } catch {
    try {
      return join(realpathSync(dirname(abs)), basename(abs));
    } catch {
      return abs;
    }
  }
}

/**
 * Remembers that `childPath` names `parentPath` as its parent, when they are in different folders (a
 * link inside one folder needs no remembering). Synchronous, so that the code that builds a link
 * (linkTo) can record it in passing; it never fails the caller: a store that cannot be written only
 * means --search-path is needed later.
 */
export function rememberLink(childPath: string, parentPath: string, by: string): void {
  if (storePath === null) return;
  const child = realSync(childPath);
  const parent = realSync(parentPath);
  if (dirname(child) === dirname(parent)) return;
  try {
    mkdirSync(dirname(storePath), { recursive: true, mode: 0o700 });
    appendFileSync(storePath, JSON.stringify({ child, parent, by, at: new Date().toISOString() }) + '\n', { mode: 0o600 });
  } catch {
    // See above: best effort.
  }
}

async function readLinks(): Promise<Link[]> {
  if (storePath === null) return [];
  let text: string;
  try {
    const fh = await open(storePath, 'r');
    try {
      const size = (await fh.stat()).size;
      const length = Math.min(size, MAX_READ);
      const buf = Buffer.alloc(length);
      await fh.read(buf, 0, length, size - length);
      text = buf.toString('utf8');
      // A tail that starts mid-line: drop the partial first line.
      if (length < size) text = text.slice(text.indexOf('\n') + 1);
    } finally {
      await fh.close();
    }
  } catch {
    return [];
  }
  const links: Link[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    try {
      const v = JSON.parse(line) as Partial<Link>;
      if (typeof v.child === 'string' && typeof v.parent === 'string') links.push({ child: v.child, parent: v.parent });
    } catch {
      // A torn or hand-damaged line: skipped.
    }
  }
  return links;
}

/** The parents remembered for the child at `childPath`, newest first (real paths; they may no longer exist). */
export async function rememberedParents(childPath: string): Promise<string[]> {
  if (storePath === null) return [];
  const child = await realpath(childPath).catch(() => resolve(childPath));
  const out = (await readLinks()).filter((l) => l.child === child).map((l) => l.parent);
  return [...new Set(out.reverse())];
}

/** The children remembered for any of these parents (real paths; they may no longer exist or have been re-pointed). */
export async function rememberedChildren(parentRealPaths: string[]): Promise<string[]> {
  if (storePath === null) return [];
  const parents = new Set(parentRealPaths);
  return [...new Set((await readLinks()).filter((l) => parents.has(l.parent)).map((l) => l.child))];
}
