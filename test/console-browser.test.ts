// The console in a real browser (Debian's chromium through playwright-core), started as a user starts
// it (`diskchain console --root ...`): the token exchange, the disks page with chains and the space
// bar's forecast, the recovery page run step by step with a reload in the middle of a merge, errors
// shown next to what caused them, and the same requests refused without the token. Each result is
// checked on disk with the engine and qemu-img. DISKCHAIN_SCREENSHOTS=1 rewrites docs/console/*.png.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, renameSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before } from 'node:test';
import { convert } from '../src/api/convert.js';
import { createChild, createDisk } from '../src/api/create.js';
import { browserTest, launchBrowser, watchedPage, shoot, startConsoleProcess, tearDown, type Browser, type ConsoleProcess } from './helpers/browser.js';
import { buildChain, chainHash } from './helpers/merge-chain.js';
import { qemuImg, requireOracle } from './helpers/oracles.js';
import { MIB, randomBytesFrom } from './helpers/vhdx-util.js';

let work: string;
let root: string;
let consoleProc: ConsoleProcess;
let browser: Browser | null = null;
let chain: string[];
let expected: string;
let flat: string;

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'diskchain-console-browser-'));
  root = join(work, 'vms');
  // A folder a lost Hyper-V host left: base <- c1 <- c2 <- c3, c1 renamed (its child's link is stale).
  const lost = join(root, 'lost-host');
  chain = await buildChain(lost, 'vhdx', 21, 96 * MIB);
  // More data on top, so the merges take long enough to be seen running.
  const top = await createChild(join(lost, 'c4.avhdx'), chain[3]!, {});
  for (let off = 0; off < 64 * MIB; off += 8 * MIB) await top.write(randomBytesFrom(off + 1, 8 * MIB), off);
  await top.close();
  chain.push(join(lost, 'c4.avhdx'));
  expected = await chainHash(chain[4]!);
  flat = join(work, 'expected.raw');
  await convert(chain[4]!, flat, { format: 'raw' });
  renameSync(chain[1]!, join(lost, 'Server (2024-05-01).avhdx'));
  // A tidy folder: a base disk with two branches.
  const library = join(root, 'library');
  mkdirSync(library);
  const base = await createDisk(join(library, 'debian.vhdx'), 'vhdx', { diskType: 'dynamic', virtualSize: 64 * MIB });
  await base.write(randomBytesFrom(5, 4 * MIB), 0);
  await base.close();
  for (const name of ['debian-web.avhdx', 'debian-db.avhdx']) {
    const c = await createChild(join(library, name), join(library, 'debian.vhdx'), {});
    await c.write(randomBytesFrom(name.length, 2 * MIB), 40 * MIB); // a block the base has not allocated
    await c.close();
  }
  consoleProc = await startConsoleProcess([root]);
});

after(() => tearDown(browser, consoleProc, work));

browserTest('the console in chromium: token, disks, recovery step by step across a reload, errors in place, refusals without the token', {}, async (t) => {
  browser = await launchBrowser(t);
  if (!browser || !requireOracle(t, 'qemu-img')) return;
  const { page, problems } = await watchedPage(browser, /403|Forbidden/);

  // Without the token: a page that says how to get in, and nothing of the console.
  const refused = await page.goto(`${consoleProc.origin}/`);
  assert.equal(refused?.status(), 403);
  assert.match(await page.textContent('body') ?? '', /FORBIDDEN.*open the URL the console printed/);

  // The printed URL: the token becomes a cookie and leaves the address bar.
  await page.goto(consoleProc.url);
  assert.equal(page.url(), `${consoleProc.origin}/`);
  const cookies = await browser.context.cookies(consoleProc.origin);
  const cookie = cookies.find((c) => c.name === `diskchain-token-${consoleProc.port}`);
  assert.equal(cookie?.sameSite, 'Strict');
  assert.equal(cookie?.httpOnly, true);

  // Disks: every folder with its disks and their chains (the VMs page opens first: there are none here).
  await page.getByRole('heading', { name: 'Virtual machines', level: 1 }).waitFor();
  await page.getByRole('navigation', { name: 'Pages' }).getByRole('link', { name: 'Disks' }).click();
  await page.getByRole('heading', { name: 'Disks', level: 1 }).waitFor();
  const library = page.locator('.card', { has: page.getByRole('heading', { name: join(root, 'library') }) });
  await library.getByRole('row', { name: /debian-web\.avhdx/ }).waitFor();
  assert.deepEqual(await library.getByRole('list', { name: 'Chain of debian-web.avhdx' }).getByRole('listitem').allTextContents(), ['debian-web.avhdx', 'debian.vhdx']);
  await library.getByRole('button', { name: 'Space to merge debian-db.avhdx' }).click();
  await library.getByText(/merging debian-db\.avhdx into debian\.vhdx: \d/).waitFor();
  const spaceLabel = await library.getByRole('img', { name: /^Space:/ }).getAttribute('aria-label');
  assert.match(spaceLabel!, /free of .*; merging debian-db\.avhdx into debian\.vhdx needs [\d.]+ MiB/);
  await shoot(page, 'disks');

  // Recovery: an error appears beside the form that caused it.
  await page.getByRole('link', { name: 'Recovery' }).click();
  await page.getByRole('textbox', { name: 'Folder' }).fill('/etc');
  await page.getByRole('button', { name: 'Scan', exact: true }).click();
  const refusal = page.getByRole('form', { name: 'Scan a folder' }).getByRole('alert');
  await refusal.waitFor();
  assert.match(await refusal.textContent() ?? '', /PATH_NOT_ALLOWED.*outside the console's roots/);

  await page.getByRole('textbox', { name: 'Folder' }).fill(join(root, 'lost-host'));
  await page.getByRole('button', { name: 'Scan', exact: true }).click();
  const steps = page.getByRole('list', { name: 'Steps of tree 1' });
  await steps.waitFor({ timeout: 60_000 }); // the scan is a job: slower when the machine is busy
  assert.equal(await page.getByRole('alert').count(), 0, 'the old error is gone');
  assert.equal(await page.getByRole('listitem', { name: 'Stale links: 1' }).count(), 1);
  assert.equal(await steps.getByRole('listitem').count(), 5, 'reparent, then four merges');
  assert.equal(await page.getByRole('button', { name: /^Run step/ }).count(), 1, 'one step at a time');
  await shoot(page, 'recovery');

  await page.getByRole('button', { name: 'Run step 1' }).click();
  await steps.getByRole('listitem', { name: 'Step 1: done' }).waitFor();
  // Step 2 merges c4 (64 MiB) into c3; reload while it runs: the job lives in the server and the page finds it again.
  await page.getByRole('button', { name: 'Run step 2' }).click();
  await page.reload();
  const jobs = page.getByRole('list', { name: 'Jobs' });
  await jobs.getByRole('listitem', { name: /^Merge c4\.avhdx into its parent: (Running|Done)$/ }).waitFor();
  await steps.getByRole('listitem', { name: 'Step 2: done' }).waitFor({ timeout: 60_000 });
  for (const n of [3, 4, 5]) {
    await page.getByRole('button', { name: `Run step ${n}` }).click();
    await steps.getByRole('listitem', { name: `Step ${n}: done` }).waitFor({ timeout: 60_000 });
  }
  await page.getByText(`Done: ${chain[0]} holds the newest state as one standalone disk.`).waitFor();
  assert.equal(await jobs.getByRole('listitem', { name: /: Done$/ }).count(), 6, 'the scan and five steps');

  // On disk: the base alone reads what the newest leaf read, for the engine and for qemu-img.
  for (const p of [chain[2], chain[3], chain[4], join(root, 'lost-host', 'Server (2024-05-01).avhdx')]) assert.equal(existsSync(p!), false);
  assert.equal(await chainHash(chain[0]!), expected);
  assert.match(qemuImg(['compare', '-f', 'vhdx', '-F', 'raw', chain[0]!, flat]), /Images are identical/);

  // The same requests from the page without the token header, or after the cookie is gone, fail.
  const withoutHeader = await page.evaluate(async (path) => {
    const r = await fetch('/api/recovery/scan', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ path }) });
    return { status: r.status, body: await r.json() };
  }, join(root, 'library'));
  assert.equal(withoutHeader.status, 403);
  assert.equal(withoutHeader.body.error.code, 'FORBIDDEN');
  await browser.context.clearCookies();
  const afterClear = await page.evaluate(async () => (await fetch('/api/jobs')).status);
  assert.equal(afterClear, 403);
  const reloaded = await page.reload();
  assert.equal(reloaded?.status(), 403);
  assert.deepEqual(problems, []);
});
