// Import as VM on the recovery page, in a real browser (Debian's chromium through playwright-core), the
// console started as a user starts it: a folder a lost Hyper-V host left (a VHDX base, a checkpoint with
// the newest leaf on it, and an older branch) is scanned, imported under a name typed in the form, and
// the page lands on the new VM with the tree Hyper-V would show: every layer a checkpoint named by its
// file time, Now under the newest leaf's parent. The VM's Now reads as the newest leaf did (engine and
// libvhdi); the folder it came from is left as it was (copied). A second import into the same folder
// is refused beside the form.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before } from 'node:test';
import { createChild, createDisk } from '../src/api/create.js';
import { openVm } from '../src/api/vm.js';
import { localDateTime } from '../src/checkpoint/create.js';
import { browserTest, launchBrowser, shoot, watchedPage, startConsoleProcess, tearDown, type Browser, type ConsoleProcess } from './helpers/browser.js';
import { chainHash } from './helpers/merge-chain.js';
import { pyvhdiSha256, requireOracle } from './helpers/oracles.js';
import { MIB, randomBytesFrom } from './helpers/vhdx-util.js';

let work: string;
let root: string;
let lost: string;
let consoleProc: ConsoleProcess;
let browser: Browser | null = null;

/** The layers, oldest first, with the time Hyper-V last wrote each (their modification times). */
const LAYERS = [
  { file: 'Web.vhdx', parent: null, at: '2024-05-01T08:00:00Z' },
  { file: 'Web_Updates.avhdx', parent: 'Web.vhdx', at: '2024-05-02T09:30:00Z' },
  { file: 'Web_Trial.avhdx', parent: 'Web.vhdx', at: '2024-05-03T11:00:00Z' },
  { file: 'Web_Now.avhdx', parent: 'Web_Updates.avhdx', at: '2024-05-04T12:15:00Z' },
] as const;

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'diskchain-console-import-'));
  root = join(work, 'vms');
  lost = join(root, 'lost-host');
  mkdirSync(lost, { recursive: true });
  for (const [i, l] of LAYERS.entries()) {
    const path = join(lost, l.file);
    const disk = l.parent === null ? await createDisk(path, 'vhdx', { diskType: 'dynamic', virtualSize: 32 * MIB }) : await createChild(path, join(lost, l.parent), {});
    await disk.write(randomBytesFrom(10 + i, 2 * MIB), i * 4 * MIB);
    await disk.write(randomBytesFrom(20 + i, 64 * 1024), 24 * MIB); // every layer overwrites the same range
    await disk.close();
  }
  // The times last: each child's creation wrote into its parent's header.
  for (const l of LAYERS) utimesSync(join(lost, l.file), new Date(l.at), new Date(l.at));
  consoleProc = await startConsoleProcess([root]);
});

after(() => tearDown(browser, consoleProc, work));

browserTest('the recovery page imports a scanned folder as a VM and lands on its tree', {}, async (t) => {
  browser = await launchBrowser(t);
  if (!browser) return;
    // The refused second import answers 409, which chromium logs.
  const { page, problems } = await watchedPage(browser, /status of 409/);
  const before = await chainHash(join(lost, 'Web_Now.avhdx'));
  const filesBefore = readdirSync(lost).sort();

  await page.goto(consoleProc.url);
  await page.getByRole('navigation', { name: 'Pages' }).getByRole('link', { name: 'Recovery' }).click();
  await page.getByRole('textbox', { name: 'Folder' }).fill(lost);
  await page.getByRole('button', { name: 'Scan', exact: true }).click();
  await page.getByRole('listitem', { name: 'Trees: 1' }).waitFor({ timeout: 60_000 });

  // The form: the name (default: the folder's), checked as typed; the folder follows it.
  const form = page.getByRole('form', { name: 'Import as VM' });
  const name = form.getByRole('textbox', { name: 'Name of the new VM' });
  const target = form.getByRole('textbox', { name: 'New VM folder' });
  assert.equal(await name.inputValue(), 'lost-host');
  assert.equal(await target.inputValue(), `${lost}-vm`);
  await name.fill('');
  assert.match((await form.getByRole('alert').textContent())!, /A name is needed/);
  assert.equal(await form.getByRole('button', { name: 'Import as VM' }).isDisabled(), true);
  await name.fill('Web server');
  const vmFolder = join(root, 'Web-server-vm');
  assert.equal(await target.inputValue(), vmFolder);
  assert.equal(await form.getByRole('radio', { name: /Copy the files/ }).isChecked(), true, 'copy by default');
  await shoot(page, 'import');
  await form.getByRole('button', { name: 'Import as VM' }).click();
  const jobs = page.getByRole('list', { name: 'Jobs' });
  await jobs.getByRole('listitem', { name: /^Import .*: Done$/ }).waitFor({ timeout: 60_000 });

  // Importing again into the same folder: refused beside the form, with the engine's code.
  await form.getByRole('button', { name: 'Import as VM' }).click();
  assert.match((await form.getByRole('alert', { name: 'Import refused' }).textContent())!, /EXISTS.*already exists/);

  // The new VM's page: every layer a checkpoint named by its file time, Now under the newest leaf's parent.
  await form.getByRole('link', { name: 'Open the VM' }).click();
  await page.getByRole('heading', { name: 'Web server', level: 1 }).waitFor();
  const tree = page.getByRole('tree', { name: 'Checkpoints of Web server' });
  await tree.waitFor();
  const named = (at: string): string => `Web server (${localDateTime(new Date(at))})`;
  const items = await tree.getByRole('treeitem').evaluateAll((els) => els.map((e) => `${e.getAttribute('aria-level')} ${e.getAttribute('aria-label')}`));
  assert.deepEqual(items, [`1 ${named(LAYERS[0].at)}`, `2 ${named(LAYERS[1].at)}`, '3 Now', `2 ${named(LAYERS[2].at)}`]);
  assert.equal(await tree.getByRole('treeitem', { name: named(LAYERS[1].at) }).getByRole('treeitem', { name: 'Now' }).count(), 1);
  assert.equal(await page.locator('.page-head .badge').textContent(), 'Off');

  // On disk: the VM's Now reads as the newest leaf did, for the engine and for qemu-img; the source is untouched.
  const vm = await openVm(vmFolder, { lock: 'read' });
  let nowChain: string[];
  try {
    assert.equal(vm.manifest.checkpoints.length, 3);
    const description = await vm.describe({ reclaim: false });
    nowChain = description.disks[0]!.chain.map((l) => join(vmFolder, l.file));
  } finally {
    await vm.close();
  }
  assert.equal(nowChain.length, 3, "Now's chain: the newest leaf, Updates, the base");
  assert.equal(await chainHash(nowChain[0]!), before);
  if (requireOracle(t, 'pyvhdi')) {
    const original = ['Web_Now.avhdx', 'Web_Updates.avhdx', 'Web.vhdx'].map((f) => join(lost, f));
    assert.equal(pyvhdiSha256(nowChain[0]!, nowChain.slice(1)), pyvhdiSha256(original[0]!, original.slice(1)), 'libvhdi reads the imported chain as the original');
  }
  assert.deepEqual(readdirSync(lost).sort(), filesBefore);
  assert.equal(await chainHash(join(lost, 'Web_Now.avhdx')), before);
  assert.deepEqual(problems, []);
});
