/**
 * Merge under SIGKILL: base <- c1 <- c2 <- c3; `merge c2 --into base` (c3 is handed over to base,
 * c1 and c2 removed) runs in a child process killed at many moments: by time, and right after each
 * phase and progress mark. After every kill the chain read through the leaf must be unchanged, and
 * running the same merge again must finish it with the expected content.
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

type Kill = { after: 'spawn'; ms: number } | { after: 'line'; line: string; nth: number; ms: number };

function runAndKill(child: string, into: string, kill: Kill): Promise<{ killed: boolean; out: string; err: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [RUNNER, child, into, String(CHECKPOINT)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let seen = 0;
    let armed = false;
    const arm = (ms: number): void => {
      if (armed) return;
      armed = true;
      setTimeout(() => p.kill('SIGKILL'), ms);
    };
    if (kill.after === 'spawn') arm(kill.ms);
    p.stdout.setEncoding('utf8');
    p.stdout.on('data', (chunk: string) => {
      out += chunk;
      if (kill.after === 'line') {
        for (const l of chunk.split('\n')) if (l.startsWith(kill.line) && ++seen === kill.nth) arm(kill.ms);
      }
    });
    p.stderr.setEncoding('utf8');
    p.stderr.on('data', (c: string) => (err += c));
    p.on('error', reject);
    p.on('close', (_code, signal) => resolve({ killed: signal === 'SIGKILL', out, err }));
  });
}

const KILLS: Kill[] = [
  ...[20, 60, 90, 120, 150, 180, 210, 240, 270, 300].map((ms): Kill => ({ after: 'spawn', ms })),
  { after: 'line', line: 'phase copy', nth: 1, ms: 0 },
  { after: 'line', line: 'phase copy', nth: 1, ms: 5 },
  ...[1, 2, 3, 5, 8, 13, 20].map((nth): Kill => ({ after: 'line', line: 'progress', nth, ms: 0 })),
  { after: 'line', line: 'phase handover', nth: 1, ms: 0 },
  { after: 'line', line: 'phase handover', nth: 1, ms: 2 },
  { after: 'line', line: 'phase remove', nth: 1, ms: 0 },
  { after: 'line', line: 'phase remove', nth: 1, ms: 1 },
  { after: 'line', line: 'phase remove', nth: 1, ms: 3 },
];

for (const format of ['vhdx', 'vhd'] as const) {
  test(`${format}: merge killed at ${KILLS.length} moments, then run again: the leaf never changes and the result is right`, { timeout: 600_000 }, async () => {
    const { dir, cleanup } = tempDir(`diskchain-merge-crash-${format}-`);
    try {
      const pristine = await buildChain(join(dir, 'pristine'), format, 7);
      const expected = await chainHash(pristine[3]!);
      let killedMidway = 0;
      for (const [round, kill] of KILLS.entries()) {
        const work = join(dir, `round${round}`);
        const [base, , c2, c3] = restore(pristine, work);
        const first = await runAndKill(c2!, base!, kill);
        if (first.killed) killedMidway++;
        const what = `${format} round ${round} (${JSON.stringify(kill)}; runner said ${first.out.split('\n').filter(Boolean).slice(-2).join(' | ')} ${first.err})`;
        assert.equal(await chainHash(c3!), expected, `leaf content after the kill: ${what}`);
        // A kill after the journal is removed but before "done" is printed (a window that grows under
        // load) leaves a finished merge: no journal, the merged files gone. Running it again would
        // then name a file that no longer exists.
        const journalLeft = readdirSync(work).some((n) => n.endsWith('.diskchain-merge.json'));
        const finishedAlone = first.out.includes('done\n') || (!journalLeft && !existsSync(c2!));
        const result = finishedAlone ? undefined : await merge(c2!, { into: base! });
        assert.equal(await chainHash(c3!), expected, `leaf content after finishing: ${what}`);
        assert.equal(await chainHash(base!) !== '', true);
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
        assert.equal(existsSync(join(work, 'c2.a' + format)), false);
      }
      assert.ok(killedMidway >= 20, `at least 20 kills landed mid-merge (got ${killedMidway})`);
    } finally {
      cleanup();
    }
  });
}
