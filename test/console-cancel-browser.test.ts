// Cancel clicked in a real browser (Debian's chromium through playwright-core): a recovery merge step
// copying 1 GiB is started from the page, its Cancel button in the jobs panel clicked once the copy
// shows progress; the job must say Cancelled with the engine's ABORTED, the chain must read as before
// with the merge's journal left beside the target, and the step (still the next one) run again from
// the page must resume from that journal and finish, the base alone reading what the child read.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before } from 'node:test';
import { createChild, createDisk } from '../src/api/create.js';
import { browserTest, launchBrowser, watchedPage, startConsoleProcess, tearDown, type Browser, type ConsoleProcess } from './helpers/browser.js';
import { chainHash } from './helpers/merge-chain.js';
import { MIB, randomBytesFrom } from './helpers/vhdx-util.js';

/** What the merge copies: the job runs for as long as 1 GiB takes to copy, whatever the machine. */
const COPY = 1024 * MIB;

let work: string;
let dir: string;
let base: string;
let child: string;
let expected: string;
let consoleProc: ConsoleProcess;
let browser: Browser | null = null;

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'diskchain-console-cancel-'));
  dir = join(work, 'disks', 'big');
  mkdirSync(dir, { recursive: true });
  base = join(dir, 'base.vhdx');
  const b = await createDisk(base, 'vhdx', { diskType: 'dynamic', virtualSize: COPY });
  await b.write(randomBytesFrom(3, 4 * MIB), 100 * MIB);
  await b.close();
  // The child holds every MiB, each filled with its own byte and stamped with its number (cheap to
  // make, yet a MiB copied to the wrong place or not at all changes the hash).
  child = join(dir, 'big.avhdx');
  const c = await createChild(child, base, {});
  const piece = new Uint8Array(8 * MIB);
  for (let off = 0; off < COPY; off += piece.length) {
    for (let m = 0; m < piece.length; m += MIB) {
      const n = (off + m) / MIB;
      piece.fill((n % 251) + 1, m, m + MIB);
      new DataView(piece.buffer).setUint32(m, n);
    }
    await c.write(piece, off);
  }
  await c.close();
  expected = await chainHash(child);
  consoleProc = await startConsoleProcess([join(work, 'disks')]);
});

after(() => tearDown(browser, consoleProc, work));

browserTest('Cancel clicked in the jobs panel stops a merge at a safe point; the step run again resumes it', { timeout: 300_000 }, async (t) => {
  browser = await launchBrowser(t);
  if (!browser) return;
  const { page, problems } = await watchedPage(browser);
  await page.goto(consoleProc.url);
  await page.getByRole('link', { name: 'Recovery' }).click();
  await page.getByRole('textbox', { name: 'Folder' }).fill(dir);
  await page.getByRole('button', { name: 'Scan', exact: true }).click();
  const steps = page.getByRole('list', { name: 'Steps of tree 1' });
  await steps.waitFor({ timeout: 60_000 });
  assert.equal(await steps.getByRole('listitem').count(), 1, 'one merge: big.avhdx into base.vhdx');

  // Run the step; once the panel shows the copy's progress, click Cancel there.
  await page.getByRole('button', { name: 'Run step 1' }).click();
  const panel = page.getByRole('complementary', { name: 'Jobs' });
  const title = 'Merge big.avhdx into its parent';
  const running = panel.getByRole('listitem', { name: `${title}: Running` });
  await running.getByText(/^copy · \d+% · [\d.]+ \w+ of 1\.0 GiB$/).waitFor({ timeout: 60_000 });
  await running.getByRole('button', { name: `Cancel ${title}` }).click();

  // The job says Cancelled, with the engine's code and message and what to do.
  const cancelled = panel.getByRole('listitem', { name: `${title}: Cancelled` });
  await cancelled.waitFor({ timeout: 60_000 });
  const note = cancelled.getByRole('alert', { name: `${title} cancelled` });
  assert.equal(await note.locator('.code').textContent(), 'ABORTED');
  assert.equal(await note.locator('.message').textContent(), 'operation cancelled');
  assert.match((await note.locator('.hint').textContent())!, /resumes when run again/);
  assert.equal(await cancelled.getByRole('button', { name: `Cancel ${title}` }).count(), 0, 'no Cancel on a finished job');

  // On disk: the chain reads as before, the journal is left beside the target (so the merge resumes),
  // and it recorded a copy that had begun and not finished.
  const journalPath = `${base}.diskchain-merge.json`;
  assert.ok(existsSync(journalPath), 'the cancelled merge keeps its journal');
  const journal = JSON.parse(readFileSync(journalPath, 'utf8')) as { phase: string; copiedUpTo: number };
  t.diagnostic(`cancelled with ${journal.copiedUpTo / MIB} MiB of ${COPY / MIB} marked copied in the journal`);
  assert.equal(journal.phase, 'copy', 'cancelled in its copy');
  assert.ok(journal.copiedUpTo < COPY, `the copy had not ended: ${journal.copiedUpTo}`);
  assert.ok(existsSync(child));
  assert.equal(await chainHash(child), expected, 'a cancelled merge changed what the chain reads');

  // The step is still the next one: run again from the page, it resumes and finishes.
  await steps.getByRole('listitem', { name: 'Step 1: ready' }).waitFor();
  await page.getByRole('button', { name: 'Run step 1' }).click();
  await steps.getByRole('listitem', { name: 'Step 1: done' }).waitFor({ timeout: 120_000 });
  await page.getByText(`Done: ${base} holds the newest state as one standalone disk.`).waitFor();
  const done = panel.getByRole('listitem', { name: `${title}: Done` });
  assert.match((await done.locator('.job-result').textContent())!, /^merged into .*base\.vhdx, [\d.]+ \w+ copied$/);
  const jobs = await page.evaluate(async () => (await (await fetch('/api/jobs')).json()) as { jobs: Array<{ kind: string; state: string; result: { resumed?: boolean; bytesCopied?: number } | null }> });
  const merges = jobs.jobs.filter((j) => j.kind === 'merge');
  assert.deepEqual(merges.map((j) => j.state).sort(), ['cancelled', 'done']);
  assert.equal(merges.find((j) => j.state === 'done')!.result!.resumed, true, 'the second run resumed the journal');
  assert.equal(merges.find((j) => j.state === 'done')!.result!.bytesCopied, COPY - journal.copiedUpTo, 'it copied what the journal had not marked done');

  assert.equal(existsSync(journalPath), false, 'the journal is gone once the merge is done');
  assert.equal(existsSync(child), false, 'the merged child is removed');
  assert.equal(await chainHash(base), expected, 'the base alone reads what the child read');
  assert.deepEqual(problems, []);
});
