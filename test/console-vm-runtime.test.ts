// The console over a running VM (real QEMU under TCG, the test guest): start, the state on the VMs and
// VM pages, live checkpoints and a live removal through the same routes as offline ones, pause/resume,
// a group checkpoint of the running VM and an off one (the same route as for off VMs), and a hard
// stop; each step a job.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startConsole } from '../src/console/start.js';
import { client } from './helpers/console-client.js';
import { requireGuest, tempFolder } from './helpers/guest.js';
import { killVm, makeGuestVm } from './helpers/vm-runtime.js';

test('start, live checkpoint, pause/resume and stop of a VM through the console', { timeout: 300_000 }, async (t) => {
  const image = await requireGuest(t);
  if (!image) return;
  const { dir, remove } = await tempFolder('dc-console-rt-');
  const folder = await makeGuestVm(dir, image, 'guest');
  const off = await makeGuestVm(dir, image, 'off');
  const server = await startConsole({ roots: [dir] });
  const api = client(server.port, server.token);
  const run = async (path: string, body: object): Promise<any> => {
    const r = await api.post(path, body);
    assert.equal(r.status, 200, r.text);
    return server.jobs.settled(r.json().job.id);
  };
  const state = async (): Promise<string> => (await api.get(`/api/vm?path=${encodeURIComponent(folder)}`)).json().state;
  try {
    const started = await run('/api/vm/power', { path: folder, action: 'start' });
    assert.equal(started.state, 'done', JSON.stringify(started.error));
    assert.equal(started.result.state, 'Running');
    const { vms } = (await api.get('/api/vms')).json();
    assert.equal(vms[0].state, 'Running');
    assert.equal(vms[0].runtime.workerPid, started.result.workerPid);
    assert.equal(await state(), 'Running');
    // The pulse the pages poll says the same, with the worker's status.
    const pulse = (await api.get(`/api/vms/status?path=${encodeURIComponent(folder)}`)).json().vms;
    assert.equal(pulse.length, 1);
    assert.equal(pulse[0].state, 'Running');
    assert.equal(pulse[0].runtime.workerPid, started.result.workerPid);
    assert.equal((await api.get(`/api/vms/status?path=${encodeURIComponent('/etc')}`)).status, 403);

    const again = await run('/api/vm/power', { path: folder, action: 'start' });
    assert.equal(again.state, 'failed');
    assert.equal(again.error.code, 'VM_STATE', 'a running VM does not start twice');

    const live = await run('/api/vm/checkpoint', { path: folder, name: 'Live' });
    assert.equal(live.state, 'done', JSON.stringify(live.error));
    assert.equal(live.result.running, true, 'the worker took it live');
    assert.equal(live.result.checkpoint.name, 'Live');

    // A checkpoint below Live, then Live removed while the guest runs: the worker merges it (removeVm).
    const second = await run('/api/vm/checkpoint', { path: folder, name: 'Live 2' });
    assert.equal(second.state, 'done', JSON.stringify(second.error));
    const removed = await run('/api/vm/remove', { path: folder, checkpoint: live.result.checkpoint.id, subtree: false });
    assert.equal(removed.state, 'done', JSON.stringify(removed.error));
    assert.equal(removed.result.running, true, 'the worker removed it live');
    assert.deepEqual(removed.result.removed.map((c: any) => c.name), ['Live']);

    assert.equal((await run('/api/vm/power', { path: folder, action: 'pause' })).result.state, 'Paused');
    assert.equal(await state(), 'Paused');
    assert.equal((await run('/api/vm/power', { path: folder, action: 'resume' })).result.state, 'Running');

    const group = await run('/api/vms/checkpoint', { paths: [folder, off], name: 'Group' });
    assert.equal(group.state, 'done', JSON.stringify(group.error));
    assert.deepEqual(group.result.checkpoints.map((c: any) => [c.running, c.checkpoint.group]), [[true, group.result.group], [false, group.result.group]]);
    assert.ok(group.result.pauseMs > 0, 'the running guest was paused, and the pause reported');
    assert.equal(await state(), 'Running');
    const stopped = await run('/api/vm/power', { path: folder, action: 'stop', force: true });
    assert.equal(stopped.state, 'done', JSON.stringify(stopped.error));
    assert.equal(await state(), 'Off');
    const { vm } = (await api.get(`/api/vm?path=${encodeURIComponent(folder)}`)).json();
    assert.deepEqual(vm.checkpoints.map((c: any) => c.name), ['Live 2', 'Group']);
  } finally {
    await killVm(folder);
    await server.close();
    await remove();
  }
});
