// The VM pages in a real browser (Debian's chromium through playwright-core), the console started as a
// user starts it: a VM with a branched tree, its ARIA tree (items, Now's place, the keyboard), then
// every checkpoint action through the page (create, apply with checkpoint-first, remove a middle
// checkpoint and watch its merge finish, rename, export with the new VM's name, group checkpoint, remove
// a subtree), each result checked on disk against a plain model with the engine (and the export with
// qemu-img); a page that cannot render shows why in place; the same requests without the token, and a
// path outside the roots, refused. DISKCHAIN_SCREENSHOTS=1 rewrites docs/console/*.png.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before } from 'node:test';
import type { Locator, Page } from 'playwright-core';
import { createVm, openVm } from '../src/api/vm.js';
import { readManifest } from '../src/checkpoint/folder.js';
import { browserTest, launchBrowser, SCREENSHOTS, watchedPage, shoot, startConsoleProcess, tearDown, type Browser, type ConsoleProcess } from './helpers/browser.js';
import { requireOracle } from './helpers/oracles.js';
import { MIB } from './helpers/vhdx-util.js';
import { assertExportedDisk, assertMatches, readWhole, type VmModel } from './helpers/vm-model.js';
import { buildBranchedVm } from './helpers/vm-tree.js';

let work: string;
let root: string;
let folder: string;
let other: string;
let model: VmModel;
let ids: Record<string, string>;
let consoleProc: ConsoleProcess;
let browser: Browser | null = null;

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'diskchain-console-vm-browser-'));
  root = join(work, 'vms');
  mkdirSync(root);
  folder = join(root, 'web01');
  // Tuning's layer holds 32 MiB: removing Database merges it, long enough to be seen running.
  ({ model, ids } = await buildBranchedVm(folder, 'web01', 32));
  other = join(root, 'db01');
  await createVm(other, { name: 'db01', newDisks: [{ size: 32 * MIB }] });
  consoleProc = await startConsoleProcess([root]);
});

after(() => tearDown(browser, consoleProc, work));

/** The accessible names of the tree's items, in document order, and each one's level. */
async function treeItems(tree: Locator): Promise<string[]> {
  return tree.getByRole('treeitem').evaluateAll((els) => els.map((e) => `${e.getAttribute('aria-level')} ${e.getAttribute('aria-label')}`));
}

/** An item's own row (a click in the middle of the item itself would land on its children). */
function rowOf(tree: Locator, name: string): Locator {
  return tree.getByRole('treeitem', { name, exact: true }).locator(':scope > .tree-row');
}

async function focusedItem(page: Page): Promise<string | null> {
  return page.evaluate(() => document.activeElement?.getAttribute('aria-label') ?? null);
}

browserTest('the VM pages in chromium: the tree, every checkpoint action with its result on disk, refusals', {}, async (t) => {
  browser = await launchBrowser(t);
  if (!browser) return;
    // The refusals this test provokes (a too long name: 400; no token, outside the roots: 403) are logged by chromium.
  const { page, problems } = await watchedPage(browser, /status of 40[03]|the page failed to render/);

  await page.goto(consoleProc.url);
  // The VMs page: both VMs with their counts.
  await page.getByRole('heading', { name: 'Virtual machines', level: 1 }).waitFor();
  const row = page.getByRole('row', { name: /web01/ });
  await row.waitFor();
  assert.deepEqual((await row.getByRole('cell').allTextContents()).slice(1, 5), ['web01', 'Off', '1', '5']);
  await page.getByRole('row', { name: /db01/ }).waitFor();
  await shoot(page, 'vms');

  // The VM page: the tree as an ARIA tree, Now under Tuning.
  await row.getByRole('link', { name: 'web01' }).click();
  const tree = page.getByRole('tree', { name: 'Checkpoints of web01' });
  await tree.waitFor();
  assert.deepEqual(await treeItems(tree), ['1 Base install', '2 Updates', '3 Web server', '3 Database', '4 Tuning', '5 Now']);
  assert.equal(await tree.getByRole('treeitem', { name: 'Tuning' }).getByRole('treeitem', { name: 'Now' }).count(), 1, 'Now sits under Tuning');
  assert.equal(await tree.getByRole('treeitem', { name: 'Now' }).getAttribute('aria-current'), 'location');

  // Keyboard: Now is the item in the tab order; Home, End, arrows, Left collapses, Enter selects.
  await tree.getByRole('treeitem', { name: 'Now' }).focus();
  await page.keyboard.press('Home');
  assert.equal(await focusedItem(page), 'Base install');
  await page.keyboard.press('End');
  assert.equal(await focusedItem(page), 'Now');
  await page.keyboard.press('ArrowUp');
  assert.equal(await focusedItem(page), 'Tuning');
  await page.keyboard.press('ArrowLeft');
  assert.equal(await tree.getByRole('treeitem', { name: 'Tuning' }).getAttribute('aria-expanded'), 'false');
  assert.equal(await tree.getByRole('treeitem', { name: 'Now' }).count(), 0, 'collapsed: Now is hidden');
  await page.keyboard.press('ArrowRight');
  assert.equal(await tree.getByRole('treeitem', { name: 'Now' }).count(), 1);
  await page.keyboard.press('ArrowLeft');
  await page.keyboard.press('ArrowLeft');
  assert.equal(await focusedItem(page), 'Database', 'Left on a collapsed item goes to its parent');
  await page.keyboard.press('ArrowRight');
  assert.equal(await focusedItem(page), 'Tuning', 'Right on an expanded item goes to its first child');
  await page.keyboard.press('ArrowRight');
  assert.equal(await tree.getByRole('treeitem', { name: 'Tuning' }).getAttribute('aria-expanded'), 'true', 'Right on a collapsed item expands it');
  await page.keyboard.press('ArrowUp');
  await page.keyboard.press('ArrowUp');
  await page.keyboard.press('ArrowUp');
  assert.equal(await focusedItem(page), 'Updates');
  await page.keyboard.press('Enter');
  assert.equal(await tree.getByRole('treeitem', { name: 'Updates' }).getAttribute('aria-selected'), 'true');
  await page.getByRole('region', { name: 'Details of Updates' }).or(page.getByLabel('Details of Updates')).first().waitFor();
  await shoot(page, 'vm');
  if (SCREENSHOTS) {
    // The same page in a narrow window (a phone, a split screen): the header wraps, nothing overflows.
    await page.setViewportSize({ width: 420, height: 860 });
    await shoot(page, 'vm-narrow');
    await page.setViewportSize({ width: 1360, height: 860 });
  }

  // Remove subtree: the dialog lists what goes, what merges and the space it needs; cancelled.
  await page.getByRole('button', { name: 'Remove subtree' }).click();
  const subtree = page.getByRole('dialog', { name: 'Remove subtree' });
  await subtree.getByRole('list', { name: 'Merges' }).waitFor();
  assert.deepEqual((await subtree.getByRole('list', { name: 'Checkpoints removed' }).getByRole('listitem').allTextContents()).sort(), ['"Database"', '"Tuning"', '"Updates"', '"Web server"']);
  assert.match((await subtree.textContent())!, /Now moves up under "Base install"/);
  assert.match((await page.getByRole('img', { name: /^Space:/ }).getAttribute('aria-label'))!, /removing "Updates" and its subtree needs/);
  await shoot(page, 'remove-subtree', { fullPage: false });
  await subtree.getByRole('button', { name: 'Cancel' }).click();
  assert.equal(await page.getByRole('dialog').count(), 0);

  // Create a checkpoint.
  await page.getByRole('textbox', { name: 'Checkpoint name' }).fill('From console');
  await page.getByRole('button', { name: 'Create checkpoint' }).click();
  await tree.getByRole('treeitem', { name: 'From console' }).getByRole('treeitem', { name: 'Now' }).waitFor();

  // Apply Web server, with "create a checkpoint of Now first" (checked by default).
  await rowOf(tree, 'Web server').click();
  await page.getByRole('button', { name: 'Apply', exact: true }).click();
  const apply = page.getByRole('dialog', { name: 'Apply checkpoint' });
  const first = apply.getByRole('checkbox', { name: 'Create a checkpoint of Now first' });
  assert.equal(await first.isChecked(), true, 'checked by default');
  await first.uncheck();
  await apply.getByRole('note', { name: 'Now is discarded' }).waitFor();
  assert.match((await apply.getByRole('note', { name: 'Now is discarded' }).textContent())!, /discarded.*since "From console".*cannot be undone/);
  await first.check();
  await apply.getByRole('textbox', { name: 'Name of the checkpoint of Now' }).fill('Saved by console');
  await shoot(page, 'apply', { fullPage: false });
  await apply.getByRole('button', { name: 'Apply', exact: true }).click();
  await tree.getByRole('treeitem', { name: 'Web server' }).getByRole('treeitem', { name: 'Now' }).waitFor();
  await tree.getByRole('treeitem', { name: 'From console' }).getByRole('treeitem', { name: 'Saved by console' }).waitFor();

  // Remove Database (a middle checkpoint: Tuning below it): its layer merges; the job runs to its end.
  await rowOf(tree, 'Database').click();
  await page.getByRole('button', { name: 'Remove', exact: true }).click();
  const remove = page.getByRole('dialog', { name: 'Remove checkpoint' });
  await remove.getByRole('list', { name: 'Merges' }).waitFor();
  await remove.getByRole('button', { name: 'Remove', exact: true }).click();
  const jobs = page.getByRole('list', { name: 'Jobs' });
  await jobs.getByRole('listitem', { name: /^Remove checkpoint .*: (Running|Done)$/ }).waitFor();
  const removeJob = jobs.getByRole('listitem', { name: /^Remove checkpoint "Database" from .*: Done$/ });
  await removeJob.waitFor({ timeout: 120_000 });
  assert.equal(await removeJob.locator('.job-result').textContent(), 'removed "Database"; 1 merge(s)', 'the job says what it did');
  await tree.getByRole('treeitem', { name: 'Database' }).waitFor({ state: 'detached' });
  assert.equal(await tree.getByRole('treeitem', { name: 'Tuning' }).getAttribute('aria-level'), '3', 'Tuning moved up under Updates');

  // Rename inline.
  await rowOf(tree, 'Tuning').click();
  await page.getByRole('button', { name: 'Rename' }).click();
  await page.getByRole('textbox', { name: 'New name' }).fill('x'.repeat(101));
  await page.getByRole('textbox', { name: 'New name' }).press('Enter');
  assert.match((await page.getByRole('alert', { name: 'Rename refused' }).textContent())!, /INVALID_ARGUMENT.*100/);
  await page.getByRole('textbox', { name: 'New name' }).fill('Tuned');
  await page.getByRole('textbox', { name: 'New name' }).press('Enter');
  await tree.getByRole('treeitem', { name: 'Tuned' }).waitFor();

  // Export: the new VM's name (checked as typed) and its folder, which follows the name until edited;
  // a target outside the roots is refused in the dialog; then the name's folder.
  await rowOf(tree, 'Updates').click();
  await page.getByRole('button', { name: 'Export' }).click();
  const exp = page.getByRole('dialog', { name: 'Export checkpoint' });
  const vmName = exp.getByRole('textbox', { name: 'Name of the new VM' });
  const target = exp.getByRole('textbox', { name: 'New VM folder' });
  const exportButton = exp.getByRole('button', { name: 'Export' });
  assert.equal(await vmName.inputValue(), 'web01 - Updates');
  assert.equal(await target.inputValue(), `${folder}-Updates`);
  await vmName.fill('x'.repeat(101));
  assert.match((await exp.getByRole('alert').textContent())!, /at most 100 characters \(this one has 101\)/);
  assert.equal(await vmName.getAttribute('aria-invalid'), 'true');
  assert.equal(await exportButton.isDisabled(), true, 'a name over the limit cannot be sent');
  await vmName.fill('  ');
  assert.match((await exp.getByRole('alert').textContent())!, /A name is needed/);
  await vmName.fill('web01 as of Updates');
  assert.equal(await exp.getByRole('alert').count(), 0);
  await shoot(page, 'export', { fullPage: false });
  const exportTarget = join(root, 'web01-as-of-Updates');
  assert.equal(await target.inputValue(), exportTarget, 'the folder follows the name');
  await target.fill(join(work, 'outside-export'));
  await vmName.fill('web01 exported');
  assert.equal(await target.inputValue(), join(work, 'outside-export'), 'a folder typed by hand stays');
  await exportButton.click();
  assert.match((await exp.getByRole('alert', { name: 'Export refused' }).textContent())!, /PATH_NOT_ALLOWED/);
  await target.fill(exportTarget);
  await exportButton.click();
  const exportJob = jobs.getByRole('listitem', { name: /^Export checkpoint "Updates" to .*: Done$/ });
  await exportJob.waitFor({ timeout: 120_000 });
  assert.equal(await exportJob.locator('.job-result').textContent(), `exported "Updates" as a new VM in ${exportTarget}`);
  assert.equal((await readManifest(exportTarget)).name, 'web01 exported');

  // Group checkpoint of both VMs, from the VMs page.
  await page.getByRole('navigation', { name: 'Pages' }).getByRole('link', { name: 'VMs' }).click();
  await page.getByRole('checkbox', { name: 'Select web01', exact: true }).check();
  await page.getByRole('checkbox', { name: 'Select db01', exact: true }).check();
  await page.getByRole('textbox', { name: 'Group checkpoint name' }).fill('Both');
  await page.getByRole('button', { name: 'Group checkpoint' }).click();
  await jobs.getByRole('listitem', { name: /^Group checkpoint "Both".*: Done$/ }).waitFor({ timeout: 60_000 });
  await page.getByRole('row', { name: /web01 exported/ }).waitFor();

  // On disk: the tree and every checkpoint's content as the model says (the console's steps replayed).
  const m = await readManifest(folder);
  const idOf = (name: string): string => m.checkpoints.find((c) => c.name === name)!.id;
  model.create(idOf('From console'), 'From console');
  model.create(idOf('Saved by console'), 'Saved by console');
  model.apply(ids['Web server']!);
  model.remove(ids.Database!, false);
  model.rename(ids.Tuning!, 'Tuned');
  model.create(idOf('Both'), 'Both');
  const vm = await openVm(folder, { lock: 'read' });
  try {
    await assertMatches(vm, model, 'after the console');
  } finally {
    await vm.close();
  }
  const copy = await openVm(exportTarget, { lock: 'read' });
  try {
    const expected = model.checkpoints.get(ids.Updates!)!.content[0]!;
    assert.ok((await readWhole(copy, 'disk0')).equals(expected), 'the export reads as Updates did');
    if (requireOracle(t, 'qemu-img')) assertExportedDisk(join(exportTarget, copy.manifest.nodes[0]!.file), 'vhdx', expected, work);
  } finally {
    await copy.close();
  }
  assert.equal((await readManifest(other)).checkpoints[0]?.name, 'Both');

  // An answer the page cannot show (here forged: a VM view without its VM) fails that page only, in place,
  // never as a blank page; Try again after the server answers properly again shows the VM.
  await page.route(/\/api\/vm\?path=/, (route) => route.fulfill({ status: 200, contentType: 'application/json', body: JSON.stringify({ vm: null, state: 'Off', runtime: null, space: null }) }));
  await page.getByRole('row', { name: /db01/ }).getByRole('link', { name: 'db01' }).click();
  const failed = page.getByRole('alert', { name: 'This page failed' });
  await failed.waitFor();
  assert.match((await failed.textContent())!, /INTERNAL.*this page could not be shown/);
  assert.equal(await page.getByRole('navigation', { name: 'Pages' }).count(), 1, 'the header stays');
  await page.unroute(/\/api\/vm\?path=/);
  await page.getByRole('button', { name: 'Try again' }).click();
  await page.getByRole('heading', { name: 'db01', level: 1 }).waitFor();
  const dbTree = page.getByRole('tree', { name: 'Checkpoints of db01' });
  await dbTree.waitFor();

  // Remove subtree through the page: db01's group checkpoint and everything under it; Now moves to the root.
  await rowOf(dbTree, 'Both').click();
  await page.getByRole('button', { name: 'Remove subtree' }).click();
  const dbSubtree = page.getByRole('dialog', { name: 'Remove subtree' });
  await dbSubtree.getByRole('list', { name: 'Checkpoints removed' }).waitFor();
  assert.deepEqual(await dbSubtree.getByRole('list', { name: 'Checkpoints removed' }).getByRole('listitem').allTextContents(), ['"Both"']);
  await dbSubtree.getByRole('button', { name: 'Remove subtree' }).click();
  await jobs.getByRole('listitem', { name: /^Remove checkpoint "Both" and its subtree from .*db01: Done$/ }).waitFor({ timeout: 60_000 });
  await dbTree.getByRole('treeitem', { name: 'Both' }).waitFor({ state: 'detached' });
  assert.deepEqual(await treeItems(dbTree), ['1 Now']);
  assert.deepEqual((await readManifest(other)).checkpoints, [], 'db01 has no checkpoint left');

  // Without the token header, or outside the roots, the same requests fail; nothing changes.
  const refusals = await page.evaluate(
    async ({ folder, checkpoint }) => {
      const token = document.querySelector<HTMLMetaElement>('meta[name="diskchain-token"]')!.content;
      const post = (path: string, body: object, withToken: boolean) =>
        fetch(path, { method: 'POST', headers: { 'content-type': 'application/json', ...(withToken ? { 'x-diskchain-token': token } : {}) }, body: JSON.stringify(body) }).then(async (r) => [r.status, (await r.json()).error?.code]);
      return [
        await post('/api/vm/remove', { path: folder, checkpoint, subtree: true }, false),
        await post('/api/vm/checkpoint', { path: folder }, false),
        await post('/api/vm/rename', { path: folder, checkpoint, name: 'nope' }, false),
        await post('/api/vm/remove', { path: '/etc', checkpoint, subtree: true }, true),
        await fetch(`/api/vm?path=${encodeURIComponent('/')}`).then(async (r) => [r.status, (await r.json()).error?.code]),
      ];
    },
    { folder, checkpoint: ids.Updates! },
  );
  assert.deepEqual(refusals, [[403, 'FORBIDDEN'], [403, 'FORBIDDEN'], [403, 'FORBIDDEN'], [403, 'PATH_NOT_ALLOWED'], [403, 'PATH_NOT_ALLOWED']]);
  await browser.context.clearCookies();
  assert.equal(await page.evaluate(async () => (await fetch('/api/vms')).status), 403);
  assert.deepEqual((await readManifest(folder)).checkpoints.map((c) => c.name).sort(), [...model.checkpoints.values()].map((c) => c.name).sort(), 'no refused request changed the tree');
  assert.deepEqual(problems, []);
});
