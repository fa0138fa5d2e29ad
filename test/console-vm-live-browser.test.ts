// The VMs and VM pages follow a running VM without a reload (real QEMU under TCG, the test guest, Debian's
// chromium): each change is made outside the page, through the library as the CLI makes it (vm start,
// pause, resume, a live checkpoint, stop; a hard stop from the page; QEMU pausing the guest on a full file system; a worker killed),
// and the page must show the new state, the buttons it allows and why. The VM sits on a small tmpfs
// (mounting needs root; without it the Paused-Critical part is skipped loudly, failed in CI).
import assert from 'node:assert/strict';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { checkpointVm, pauseVm, resumeVm, startVm, stopVm, vmStatus } from '../src/api/vm-runtime.js';
import { browserTest, launchBrowser, shoot, watchedPage, startConsoleProcess, type Browser, type ConsoleProcess } from './helpers/browser.js';
import { pollUntil, requireGuest, tempFolder } from './helpers/guest.js';
import { fillUp, mountTmpfs } from './helpers/tmpfs.js';
import { killVm, makeGuestVm, serialOf } from './helpers/vm-runtime.js';

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
