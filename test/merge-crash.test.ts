/**
 * Merge under SIGKILL: base <- c1 <- c2 <- c3; `merge c2 --into base` (c3 is handed over to base,
 * c1 and c2 removed) runs in a child process that kills itself on an event: just before the n-th
 * change it makes to a file (test/helpers/merge-runner.ts), so a kill point means the same instant on
 * any machine. A first run lists the merge's events by phase; the kill points cover every phase (plan,
 * copy, handover, remove): every change of a short phase; in a longer one its first and last change,
 * the first change of each kind (journal writes, flushes, renames, removals, folder flushes) and
 * writes spread through it. After every kill
 * the chain read through the leaf must be unchanged, and running the same merge again must finish it
 * with the expected content.
 */
import { spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { merge } from '../src/ops/merge.js';
import { openChain } from '../src/chain/open-chain.js';
import { checkDisk } from '../src/api/check.js';
import { buildChain, chainHash, restore } from './helpers/merge-chain.js';
import { MIB, tempDir } from './helpers/vhdx-util.js';

const RUNNER = new URL('./helpers/merge-runner.js', import.meta.url).pathname;
const CHECKPOINT = MIB;
/** Writes chosen per phase, spread evenly, beside the first and last change and the first of each kind. */
const WRITES_PER_PHASE = 4;
/** A phase with at most this many changes is killed before every one of them. */
const EVERY_CHANGE_UP_TO = 12;

interface MergeEvent {
  n: number;
  phase: string;
  kind: string;
}

interface Run {
  killed: boolean;
  events: MergeEvent[];
  out: string;
  err: string;
}

/** Runs the merge in the runner, killed just before its change number `killAt` (0: never). */
function runMerge(child: string, into: string, killAt: number): Promise<Run> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [RUNNER, child, into, String(CHECKPOINT), String(killAt)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.setEncoding('utf8');
    p.stdout.on('data', (c: string) => (out += c));
    p.stderr.setEncoding('utf8');
    p.stderr.on('data', (c: string) => (err += c));
    p.on('error', reject);
    p.on('close', (_code, signal) => {
      const events = [...out.matchAll(/^event (\d+) (\S+) (\S+)$/gm)].map((m) => ({ n: Number(m[1]), phase: m[2]!, kind: m[3]! }));
      resolve({ killed: signal === 'SIGKILL', events, out, err });
    });
  });
}

/** The kill points that cover every phase of a merge whose events are `events`, in order. */
function killPoints(events: MergeEvent[]): number[] {
  const points = new Set<number>();
  for (const phase of new Set(events.map((e) => e.phase))) {
    const inPhase = events.filter((e) => e.phase === phase);
    if (inPhase.length <= EVERY_CHANGE_UP_TO) for (const e of inPhase) points.add(e.n);
    points.add(inPhase[0]!.n);
    points.add(inPhase[inPhase.length - 1]!.n);
    for (const kind of new Set(inPhase.map((e) => e.kind))) points.add(inPhase.find((e) => e.kind === kind)!.n);
    const writes = inPhase.filter((e) => e.kind === 'write');
    for (let i = 1; i <= WRITES_PER_PHASE && writes.length; i++) points.add(writes[Math.floor((i * writes.length) / (WRITES_PER_PHASE + 1))]!.n);
  }
  return [...points].sort((a, b) => a - b);
}

for (const format of ['vhdx', 'vhd'] as const) {
  test(`${format}: merge killed before each chosen change of every phase, then run again: the leaf never changes and the result is right`, { timeout: 900_000 }, async (t) => {
    const { dir, cleanup } = tempDir(`diskchain-merge-crash-${format}-`);
    try {
      const pristine = await buildChain(join(dir, 'pristine'), format, 7);
      const expected = await chainHash(pristine[3]!);
      const [lb, , lc2] = restore(pristine, join(dir, 'listing'));
      const listing = await runMerge(lc2!, lb!, 0);
      assert.ok(listing.out.includes('done\n'), `the merge runs to the end when not killed: ${listing.err}`);
      const phases = [...new Set(listing.events.map((e) => e.phase))];
      assert.deepEqual(phases, ['plan', 'copy', 'handover', 'remove'], 'the merge changes files in every phase');
      const points = killPoints(listing.events);
      t.diagnostic(`${format}: ${listing.events.length} changes (${phases.map((p) => `${p} ${listing.events.filter((e) => e.phase === p).length}`).join(', ')}), ${points.length} kill points`);
      for (const n of points) {
        const at = listing.events[n - 1]!;
        const work = join(dir, `kill${n}`);
        const [base, , c2, c3] = restore(pristine, work);
        const first = await runMerge(c2!, base!, n);
        const what = `${format} killed before change ${n} (${at.phase} ${at.kind}): ${first.err}`;
        assert.ok(first.killed, `the runner reached change ${n}: ${what}`);
        const last = first.events[first.events.length - 1];
        assert.deepEqual(last, at, `the merge made the same changes as in the listing run up to the kill: ${what}`);
        assert.equal(await chainHash(c3!), expected, `leaf content after the kill: ${what}`);
        // Killed after the journal and its pointers are gone (the last changes), the merge is finished:
        // running it again would name a file that no longer exists.
        const journalLeft = readdirSync(work).some((name) => name.endsWith('.diskchain-merge.json'));
        const finishedAlone = !journalLeft && !existsSync(c2!);
        const result = finishedAlone ? undefined : await merge(c2!, { into: base! });
        assert.equal(await chainHash(c3!), expected, `leaf content after finishing: ${what}`);
        const chain = await openChain(c3!);
        try {
          assert.deepEqual(chain.layers.map((l) => l.path.slice(work.length + 1)), [`c3.a${format}`, `base.${format}`], `c3 now sits on base: ${what}`);
        } finally {
          await chain.close();
        }
        assert.deepEqual(readdirSync(work).sort(), [`base.${format}`, `c3.a${format}`], `merged files and journal gone: ${what} (resumed ${result?.resumed})`);
        for (const f of [base!, c3!]) {
          const report = await checkDisk(f);
          assert.equal(report.findings.filter((x) => x.severity !== 'info').length, 0, `${f} checks clean: ${JSON.stringify(report.findings)} ${what}`);
        }
      }
    } finally {
      cleanup();
    }
  });
}
