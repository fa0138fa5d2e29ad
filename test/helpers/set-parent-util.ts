/**
 * Shared by the setParent tests: the SIGKILL writer's driver, every crash state of a recorded
 * operation (prefixes and page-torn last writes), and a fingerprint of one layer's own contents.
 */
import { spawn } from 'node:child_process';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { linkTo } from '../../src/chain/link-paths.js';
import { openChain } from '../../src/chain/open-chain.js';
import type { FormatDriver, LinkIdentity, ParentLinkUpdate, ParentReference, VirtualDisk } from '../../src/formats/types.js';
import { FileSource } from '../../src/io/file-source.js';
import { MemorySource } from '../../src/io/memory-source.js';
import type { RecordingSource } from './vhd-util.js';
import { describeFindings, sha256 } from './vhdx-util.js';

const WRITER = new URL('./set-parent-crash-writer.js', import.meta.url).pathname;
const PAGE = 4096;

export interface WriterOutcome {
  /** setParent calls that returned before the kill. */
  acked: number;
  killed: boolean;
  done: boolean;
  stderr: string;
}

/**
 * Runs the crash writer on `path` and SIGKILLs it once it has printed "ready" and then `afterSets`
 * "set N" lines: an event, never a delay. The writer goes on while the signal travels, so the kill
 * lands during a later setParent (or between two).
 */
export function runSetParentWriter(path: string, linksPath: string, count: number, afterSets: number): Promise<WriterOutcome> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [WRITER, path, linksPath, String(count)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let stderr = '';
    let killed = false;
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      out += chunk;
      if (!killed && out.includes('ready\n') && (out.match(/^set \d+$/gm)?.length ?? 0) >= afterSets) {
        killed = true;
        child.kill('SIGKILL');
      }
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (_code, signal) => {
      const acked = [...out.matchAll(/^set (\d+)$/gm)].map((m) => Number(m[1]));
      resolve({ acked: acked.length ? Math.max(...acked) : 0, killed: signal === 'SIGKILL', done: out.includes('done\n'), stderr });
    });
  });
}

/**
 * Every state a process kill can leave after the recorded operations: each prefix of them, and each
 * prefix followed by the first pages only of the next write (a killed pwrite stops at a page boundary;
 * page cache outlives the process, so flushes do not matter).
 */
export async function* crashStates(rec: RecordingSource): AsyncGenerator<{ label: string; source: MemorySource }> {
  for (let k = 0; k <= rec.ops.length; k++) {
    yield { label: `after ${k} of ${rec.ops.length} operations`, source: await rec.replay(k) };
    const next = rec.ops[k];
    if (next?.kind !== 'write') continue;
    for (let cut = Math.floor(next.offset / PAGE + 1) * PAGE; cut < next.offset + next.data.length; cut += PAGE) {
      const source = await rec.replay(k);
      await source.write(next.data.subarray(0, cut - next.offset), next.offset);
      yield { label: `after ${k} operations and ${cut - next.offset} bytes of the next write (at ${next.offset})`, source };
    }
  }
}

/** What one layer holds on its own: its map and the SHA-256 of its read(). */
export async function layerFingerprint(disk: VirtualDisk): Promise<string> {
  const h = createHash('sha256');
  const chunk = new Uint8Array(4 << 20);
  for (let off = 0; off < disk.virtualSize; off += chunk.length) {
    const part = chunk.subarray(0, Math.min(chunk.length, disk.virtualSize - off));
    await disk.read(part, off);
    h.update(part);
  }
  return `${h.digest('hex')} ${JSON.stringify(await disk.map(0, disk.virtualSize))}`;
}

/** Asserts `actual` is exactly one of `allowed` (all of it: locators, expected identity, linkage2); returns which. */
export function assertOneOf(actual: ParentReference | undefined, allowed: ParentReference[], what: string): number {
  const i = allowed.findIndex((r) => isDeepEqual(actual, r));
  if (i < 0) assert.fail(`${what}: parent reference ${JSON.stringify(actual)} is none of ${JSON.stringify(allowed)}`);
  return i;
}

function isDeepEqual(a: unknown, b: unknown): boolean {
  try {
    assert.deepStrictEqual(a, b);
    return true;
  } catch {
    return false;
  }
}

/** Asserts that `fn` rejects with a DiskchainError of `code`. */
export async function assertCode(fn: () => Promise<unknown>, code: string, what: string): Promise<void> {
  await assert.rejects(fn, (e: unknown) => {
    assert.equal((e as { code?: string }).code, code, `${what}: ${String(e)}`);
    assert.ok((e as { details?: { file?: string } }).details?.file, `${what}: error names no file`);
    return true;
  }, what);
}

/** A parent link from `child` to `parent` (the paths the CLI would write), with fields overridden by `extra`. */
export function linkFor(child: string, parent: string, identity: LinkIdentity, extra: Partial<ParentLinkUpdate> = {}): ParentLinkUpdate {
  return { ...linkTo(child, parent, identity), ...extra };
}

/** Fails unless `driver.check` finds nothing above info in the file. */
export async function assertCheckClean(driver: FormatDriver, path: string, what: string): Promise<void> {
  const src = await FileSource.open(path);
  let findings;
  try {
    findings = await driver.check(src);
  } finally {
    await src.close();
  }
  assert.deepEqual(findings.filter((f) => f.severity !== 'info'), [], `${what}:\n${describeFindings(findings)}`);
}

/** The sha256 of the whole disk read through its chain, after checking which parent the chain found. */
export async function chainSha(path: string, expectParent: string): Promise<string> {
  const chain = await openChain(path);
  try {
    assert.equal(chain.links[0]?.parentPath, expectParent, 'the chain found another parent');
    const buf = new Uint8Array(chain.virtualSize);
    await chain.read(buf, 0);
    return sha256(buf);
  } finally {
    await chain.close();
  }
}
