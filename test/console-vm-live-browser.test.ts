// The VMs and VM pages follow a running VM without a reload (real QEMU under TCG, the test guest, Debian's
// chromium): each change is made outside the page, through the library as the CLI makes it (vm start,
// pause, resume, a live checkpoint, stop; a hard stop from the page; QEMU pausing the guest on a full file system; a worker killed),
// and the page must show the new state, the buttons it allows and why. The VM sits on a small tmpfs
// (mounting needs root; without it the Paused-Critical part is skipped loudly, failed in CI).
// Then the power buttons clicked on the page (Start, Pause, Resume, Save, Start resuming the saved
// state), each checked against the runtime and the guest's own disk, on a VM whose free-space reserve
// is more than the file system has: its warning reads in human units, the exact counts on hover.
import assert from 'node:assert/strict';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { checkpointVm, pauseVm, resumeVm, startVm, stopVm, vmStatus } from '../src/api/vm-runtime.js';
import { statusText } from '../src/cli/commands-vm-run.js';
import { browserTest, launchBrowser, shoot, watchedPage, startConsoleProcess, type Browser, type ConsoleProcess } from './helpers/browser.js';
import { pollUntil, requireGuest, tempFolder } from './helpers/guest.js';
import { fillUp, mountTmpfs } from './helpers/tmpfs.js';
import { guestDiskOf, killVm, makeGuestVm, serialOf } from './helpers/vm-runtime.js';

/** The state badge in the VM page's header. */
const badge = (page: Page) => page.locator('.page-head .badge');
const power = (page: Page, name: string) => page.getByRole('group', { name: 'Power' }).getByRole('button', { name, exact: true });

async function enabledPower(page: Page): Promise<string[]> {
  const out: string[] = [];
  for (const name of ['Start', 'Stop', 'Save', 'Pause', 'Resume', 'Turn off']) if (await power(page, name).isEnabled()) out.push(name);
  return out;
}

browserTest('the console follows a VM changed from outside: start, pause, Paused-Critical, live checkpoint, stop, a dead worker', { timeout: 300_000 }, async (t) => {
  const image = await requireGuest(t);
  if (!image) return;
  const { dir, remove } = await tempFolder('dc-console-live-');
  const mnt = join(dir, 'vms');
  await mkdir(mnt);
  const tmpfs = mountTmpfs(mnt, '48m');
  if (!tmpfs.ok) {
    const msg = `${tmpfs.error}; the Paused-Critical part is skipped`;
    if (process.env.CI === 'true') throw new Error(msg);
    console.error(`SKIPPED LOUDLY: ${msg}`);
  }
  const folder = await makeGuestVm(mnt, image, 'guest', { checkpointType: 'production' });
  let consoleProc: ConsoleProcess | undefined;
  let browser: Browser | null = null;
  try {
    browser = await launchBrowser(t);
    if (!browser) return;
    consoleProc = await startConsoleProcess([dir]);
    const { page, problems } = await watchedPage(browser);
    await page.goto(consoleProc.url);

    // The VMs page: Off, then Running once `vm start` ran elsewhere.
    const row = page.getByRole('row', { name: /guest/ });
    await row.getByRole('cell', { name: 'Off', exact: true }).waitFor();
    await startVm(folder);
    await row.getByRole('cell', { name: 'Running', exact: true }).waitFor({ timeout: 30_000 });

    // The VM page: Running with its buttons; then paused and resumed from outside.
    await row.getByRole('link', { name: 'guest' }).click();
    await page.getByRole('tree', { name: 'Checkpoints of guest' }).waitFor();
    assert.equal(await badge(page).textContent(), 'Running');
    assert.deepEqual(await enabledPower(page), ['Stop', 'Save', 'Pause', 'Turn off']);
    await pauseVm(folder);
    await badge(page).getByText('Paused', { exact: true }).waitFor({ timeout: 30_000 });
    assert.deepEqual(await enabledPower(page), ['Stop', 'Save', 'Resume', 'Turn off']);
    await resumeVm(folder);
    await badge(page).getByText('Running', { exact: true }).waitFor({ timeout: 30_000 });

    // A live checkpoint from outside: it appears in the tree with Now under it.
    await serialOf(folder).waitFor(/diskchain-guest: ready boots=1 .* agent=yes/, 90_000);
    await checkpointVm(folder, { name: 'From the CLI' });
    const tree = page.getByRole('tree', { name: 'Checkpoints of guest' });
    await tree.getByRole('treeitem', { name: 'From the CLI' }).getByRole('treeitem', { name: 'Now' }).waitFor({ timeout: 30_000 });

    if (tmpfs.ok) {
      // The file system fills up: QEMU pauses the guest on its next write to a new block; the page says so and why.
      const filler = join(mnt, 'filler');
      await fillUp(filler);
      await pollUntil(() => vmStatus(folder), (s) => s.state === 'Paused-Critical', 90_000, 'Paused-Critical');
      await badge(page).getByText('Paused-Critical', { exact: true }).waitFor({ timeout: 30_000 });
      assert.match((await page.getByRole('status', { name: 'Runtime' }).textContent())!, /QEMU could not write on .*no space.*Free space, then Resume/);
      assert.deepEqual(await enabledPower(page), ['Stop', 'Resume', 'Turn off']);
      await shoot(page, 'vm-critical');
      // Space freed, Resume from the page: Running again.
      await rm(filler);
      await power(page, 'Resume').click();
      await page.getByRole('list', { name: 'Jobs' }).getByRole('listitem', { name: /^Resume .*: Done$/ }).waitFor({ timeout: 60_000 });
      await badge(page).getByText('Running', { exact: true }).waitFor();
    }

    // Stopped from outside: Off, Start allowed.
    await stopVm(folder, { force: true });
    await badge(page).getByText('Off', { exact: true }).waitFor({ timeout: 30_000 });
    assert.deepEqual(await enabledPower(page), ['Start']);

    // Started from outside, turned off from the page (a hard stop, confirmed first).
    await startVm(folder);
    await badge(page).getByText('Running', { exact: true }).waitFor({ timeout: 30_000 });
    await power(page, 'Turn off').click();
    const confirm = page.getByRole('group', { name: 'Confirm turn off' });
    await confirm.getByRole('button', { name: 'Keep running' }).click();
    assert.equal(await confirm.count(), 0, 'Keep running changes nothing');
    assert.equal((await vmStatus(folder)).state, 'Running');
    await power(page, 'Turn off').click();
    await confirm.getByRole('button', { name: 'Turn off now' }).click();
    await page.getByRole('list', { name: 'Jobs' }).getByRole('listitem', { name: /\(hard stop\): Done$/ }).waitFor({ timeout: 60_000 });
    await badge(page).getByText('Off', { exact: true }).waitFor();
    assert.equal((await vmStatus(folder)).state, 'Off');

    // Started again, then its worker dies (SIGKILL): the page says so without a reload.
    const started = await startVm(folder);
    await badge(page).getByText('Running', { exact: true }).waitFor({ timeout: 30_000 });
    process.kill(started.workerPid!, 'SIGKILL');
    await page.getByRole('status', { name: 'Runtime' }).getByText(/A worker died: the worker \(pid \d+\) died while the VM was Running/).waitFor({ timeout: 30_000 });
    assert.notEqual(await badge(page).textContent(), 'Running');
    assert.deepEqual(problems, []);
  } finally {
    await killVm(folder);
    await browser?.close();
    const code = (await consoleProc?.stop()) ?? 0;
    if (tmpfs.ok) tmpfs.unmount();
    await remove();
    assert.equal(code, 0, `the console stops cleanly on Ctrl-C: ${consoleProc?.stderr()}`);
  }
});

/** More than any file system here has free: the runtime's low-space warning is on for the whole run. */
const RESERVE = 2 ** 50;

browserTest('the power buttons clicked on a running guest (Start, Pause, Resume, Save, Start from Saved); the low-space warning in human units', { timeout: 240_000 }, async (t) => {
  const image = await requireGuest(t);
  if (!image) return;
  const { dir, remove } = await tempFolder('dc-console-power-');
  const folder = await makeGuestVm(dir, image, 'clicked', { freeSpaceReserveBytes: RESERVE });
  let consoleProc: ConsoleProcess | undefined;
  let browser: Browser | null = null;
  try {
    browser = await launchBrowser(t);
    if (!browser) return;
    consoleProc = await startConsoleProcess([dir]);
    const { page, problems } = await watchedPage(browser);
    await page.goto(consoleProc.url);
    await page.getByRole('row', { name: /clicked/ }).getByRole('link', { name: 'clicked' }).click();
    await page.getByRole('tree', { name: 'Checkpoints of clicked' }).waitFor();
    assert.deepEqual(await enabledPower(page), ['Start']);
    const jobs = page.getByRole('list', { name: 'Jobs' });
    /** Clicks a power button and waits for its job (the n-th of that action) to be Done and the badge to say `state`. */
    const click = async (name: string, state: string, nth = 0): Promise<void> => {
      await power(page, name).click();
      await jobs.getByRole('listitem', { name: `${name} ${folder}: Done` }).nth(nth).waitFor({ timeout: 120_000 });
      await badge(page).getByText(state, { exact: true }).waitFor({ timeout: 30_000 });
      assert.equal((await vmStatus(folder)).state, state);
    };

    await click('Start', 'Running');
    assert.deepEqual(await enabledPower(page), ['Stop', 'Save', 'Pause', 'Turn off']);
    // The reserve is not met: the warning says so in the units a person reads; the exact counts on hover.
    const low = page.getByRole('status', { name: 'Runtime' }).getByLabel('Low space');
    const free = (await vmStatus(folder)).lowSpace?.free;
    assert.ok(free !== undefined && free < RESERVE, 'the runtime reports the reserve as not met');
    assert.match((await low.textContent())!, /^The VM folder's file system has [\d.]+ (KiB|MiB|GiB|TiB) free, less than the reserve of 1\.0 PiB: the guest pauses \(Paused-Critical\) when it is full\./);
    assert.doesNotMatch((await low.textContent())!, /\d{5}/, 'no raw byte count in the text');
    assert.match((await low.getAttribute('title'))!, /^[\d,]+ bytes free; reserve 1,125,899,906,842,624 bytes/);
    assert.match(statusText(await vmStatus(folder)), /warning: the VM folder's file system has [\d.]+ \w+ \(\d+ bytes\) free, less than the reserve of 1\.00 PiB \(1125899906842624 bytes\)/);

    // Pause and Resume: the guest's clock stops and goes on.
    await serialOf(folder).waitFor(/diskchain-guest: ready boots=1 /, 90_000);
    const bootId = (await guestDiskOf(folder)).boot!.id;
    await click('Pause', 'Paused');
    assert.deepEqual(await enabledPower(page), ['Stop', 'Save', 'Resume', 'Turn off']);
    await click('Resume', 'Running');

    // Save: QEMU's state to the VM folder, the VM Saved; Start resumes it (the same boot, its counter goes on).
    await click('Save', 'Saved');
    assert.deepEqual(await enabledPower(page), ['Start']);
    await page.getByRole('status', { name: 'Runtime' }).getByText(/^Saved state from .*: Start resumes it\.$/).waitFor();
    const atSave = (await guestDiskOf(folder)).latest!.tick;
    await click('Start', 'Running', 1);
    assert.equal((await vmStatus(folder)).saved, null, 'the saved state was used up');
    await pollUntil(() => guestDiskOf(folder), (v) => v.latest!.tick > atSave, 60_000, 'ticks after the resume');
    assert.equal((await guestDiskOf(folder)).boot!.id, bootId, 'resumed, not booted again');
    assert.doesNotMatch(await serialOf(folder).text(), /boots=2/);
    assert.deepEqual(problems, []);
  } finally {
    await killVm(folder);
    await browser?.close();
    const code = (await consoleProc?.stop()) ?? 0;
    await remove();
    assert.equal(code, 0, `the console stops cleanly on Ctrl-C: ${consoleProc?.stderr()}`);
  }
});
