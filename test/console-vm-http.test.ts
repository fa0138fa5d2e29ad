// The console's VM routes without a browser: the VMs list, a VM's tree and chains, forecasts that the
// engine then bears out, every action as a job (or, for rename, a direct answer) with the result held
// to a plain model of the tree and contents, and the refusals: no token, paths outside the roots,
// engine errors with their codes.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { openVm } from '../src/api/vm.js';
import { readManifest } from '../src/checkpoint/folder.js';
import { startConsole, type RunningConsole } from '../src/console/start.js';
import { client, readEvents, request, type Reply } from './helpers/console-client.js';
import { requireOracle } from './helpers/oracles.js';
import { assertExportedDisk, assertMatches, readWhole, type VmModel } from './helpers/vm-model.js';
import { buildBranchedVm } from './helpers/vm-tree.js';
import { buildChain, chainHash } from './helpers/merge-chain.js';
import { createHash } from 'node:crypto';

let work: string;
let root: string;
let folder: string;
let model: VmModel;
let ids: Record<string, string>;
let server: RunningConsole;
let api: ReturnType<typeof client>;

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'diskchain-console-vm-'));
  root = join(work, 'root');
  mkdirSync(root);
  folder = join(root, 'web01');
  ({ model, ids } = await buildBranchedVm(folder, 'web01'));
  server = await startConsole({ roots: [root] });
  api = client(server.port, server.token);
});

after(async () => {
  await server.close();
  rmSync(work, { recursive: true, force: true });
});

function ok(r: Reply): any {
  assert.equal(r.status, 200, r.text);
  return r.json();
}

function assertError(r: Reply, status: number, code: string): void {
  assert.equal(r.status, status, r.text);
  assert.equal(r.json().error.code, code, r.text);
  assert.doesNotMatch(r.text, /\n\s+at |node:internal/, 'no stack trace');
}

/** Starts an action and reads the event stream until its job settles; returns the job and every event seen. */
async function runJob(path: string, body: object): Promise<{ job: any; events: any[] }> {
  const { job } = ok(await api.post(path, body));
  const events = await readEvents(server.port, server.token, (e) => (e.event === 'job' && e.data.id === job.id && e.data.state !== 'running') || (e.event === 'jobs' && e.data.some((j: any) => j.id === job.id && j.state !== 'running')));
  const last = events.filter((e) => e.event === 'job' && e.data.id === job.id).pop()?.data ?? ok(await api.get(`/api/jobs/${job.id}`)).job;
  return { job: last, events };
}

async function check(where: string): Promise<void> {
  const vm = await openVm(folder, { lock: 'read' });
  try {
    await assertMatches(vm, model, where);
  } finally {
    await vm.close();
  }
}

test('the VMs list and a VM: tree with Now under its parent, chains, sizes, space', async () => {
  const { vms, spaces } = ok(await api.get('/api/vms'));
  assert.equal(vms.length, 1);
  assert.equal(vms[0].name, 'web01');
  assert.equal(vms[0].state, 'Off');
  assert.equal(vms[0].runtime.state, 'Off');
  assert.equal(vms[0].checkpoints, 5);
  assert.equal(vms[0].disks, 1);
  assert.ok(spaces[vms[0].space].available > 0);

  const { vm, space } = ok(await api.get(`/api/vm?path=${encodeURIComponent(folder)}`));
  assert.equal(vm.bytes, vms[0].bytes, 'the list and the VM page count the same bytes');
  const byName = Object.fromEntries(vm.checkpoints.map((c: any) => [c.name, c]));
  assert.equal(byName['Web server'].parent, ids.Updates);
  assert.equal(byName.Database.parent, ids.Updates);
  assert.deepEqual(byName.Updates.children.sort(), [ids['Web server'], ids.Database].sort());
  assert.equal(vm.now.parent, ids.Tuning);
  for (const c of vm.checkpoints) assert.equal(typeof c.reclaimBytes, 'number', `${c.name} has its removal measured`);
  assert.deepEqual(vm.disks[0].chain.map((l: any) => l.namedBy), ['now', ids.Tuning, ids.Database, ids.Updates, ids['Base install']], "Now's chain: its leaf, then the layers Tuning, Database, Updates and Base install froze");
  assert.equal(space.path, folder);
});

test('forecasts: remove subtree lists what goes and merges; the removal then does what its forecast said', async () => {
  const subtree = ok(await api.post('/api/vm/forecast', { path: folder, operation: 'remove', checkpoint: ids.Updates, subtree: true })).forecast;
  assert.deepEqual(subtree.removed.map((c: any) => c.name).sort(), ['Database', 'Tuning', 'Updates', 'Web server']);
  assert.equal(subtree.nowParent, ids['Base install'], 'Now moves up to the nearest kept checkpoint');
  assert.ok(subtree.merges.length >= 1);
  const apply = ok(await api.post('/api/vm/forecast', { path: folder, operation: 'apply', checkpoint: ids['Web server'], checkpointFirst: false })).forecast;
  assert.equal(apply.discarded.length, 1, "applying without checkpoint-first discards Now's leaf");
  const applySaved = ok(await api.post('/api/vm/forecast', { path: folder, operation: 'apply', checkpoint: ids['Web server'], checkpointFirst: true })).forecast;
  assert.deepEqual(applySaved.discarded, []);

  const forecast = ok(await api.post('/api/vm/forecast', { path: folder, operation: 'remove', checkpoint: ids.Database, subtree: false })).forecast;
  assert.equal(forecast.merges.length, 1, "Database's layer merges with Tuning's");
  const { job, events } = await runJob('/api/vm/remove', { path: folder, checkpoint: ids.Database, subtree: false });
  assert.equal(job.state, 'done', JSON.stringify(job.error));
  assert.ok(events.some((e) => e.event === 'job' && e.data.id === job.id && e.data.progress), 'the merge streamed its progress');
  assert.deepEqual(job.result.removed, [{ id: ids.Database, name: 'Database' }]);
  assert.equal(job.result.merged.length, 1);
  for (const k of ['victim', 'survivor', 'direction', 'bytesToCopy'] as const) assert.equal(job.result.merged[0][k], forecast.merges[0][k], k);
  model.remove(ids.Database!, false);
  await check('after removing Database');
});

test('create, apply with checkpoint-first, rename, export, group checkpoint: each checked on disk', async (t) => {
  const created = await runJob('/api/vm/checkpoint', { path: folder, name: 'Before apply' });
  assert.equal(created.job.state, 'done');
  assert.equal(created.job.result.running, false, 'an off VM: the engine checkpoints its disks');
  model.create(created.job.result.checkpoint.id, 'Before apply');
  await check('after create');

  const applied = await runJob('/api/vm/apply', { path: folder, checkpoint: ids['Web server'], checkpointFirst: true, name: 'Saved Now' });
  assert.equal(applied.job.state, 'done', JSON.stringify(applied.job.error));
  assert.equal(applied.job.result.savedFirst.name, 'Saved Now');
  model.create(applied.job.result.savedFirst.id, 'Saved Now');
  model.apply(ids['Web server']!);
  await check('after apply with checkpoint-first');

  ok(await api.post('/api/vm/rename', { path: folder, checkpoint: ids['Base install'], name: 'Fresh install' }));
  model.rename(ids['Base install']!, 'Fresh install');
  await check('after rename');
  assertError(await api.post('/api/vm/rename', { path: folder, checkpoint: ids['Base install'], name: 'x'.repeat(101) }), 400, 'INVALID_ARGUMENT');
  assertError(await api.post('/api/vm/rename', { path: folder, checkpoint: 'no-such-checkpoint', name: 'y' }), 404, 'CHECKPOINT_NOT_FOUND');

  const target = join(root, 'web01-export');
  const exported = await runJob('/api/vm/export', { path: folder, checkpoint: ids.Updates, target, format: 'vhdx' });
  assert.equal(exported.job.state, 'done', JSON.stringify(exported.job.error));
  if (requireOracle(t, 'qemu-img')) assertExportedDisk(exported.job.result.disks[0].path, 'vhdx', model.checkpoints.get(ids.Updates!)!.content[0]!, work);
  const copy = await openVm(target, { lock: 'read' });
  try {
    assert.ok((await readWhole(copy, 'disk0')).equals(model.checkpoints.get(ids.Updates!)!.content[0]!), 'the engine reads the export as Updates was');
  } finally {
    await copy.close();
  }
  const again = await runJob('/api/vm/export', { path: folder, checkpoint: ids.Updates, target: join(root, 'other-export') });
  assert.equal(again.job.state, 'done');
  assertError(await api.post('/api/vm/export', { path: folder, checkpoint: ids.Updates, target }), 409, 'EXISTS');
  // The new VM's name: Hyper-V's limit, refused before anything is copied; a good one lands in vm.json.
  for (const name of ['x'.repeat(101), '   ']) assertError(await api.post('/api/vm/export', { path: folder, checkpoint: ids.Updates, target: join(root, 'named-export'), name }), 400, 'INVALID_ARGUMENT');
  assert.equal(existsSync(join(root, 'named-export')), false, 'a refused name creates nothing');
  const named = await runJob('/api/vm/export', { path: folder, checkpoint: ids.Updates, target: join(root, 'named-export'), name: ' web01 as of Updates ' });
  assert.equal(named.job.state, 'done', JSON.stringify(named.job.error));
  assert.equal((await readManifest(join(root, 'named-export'))).name, 'web01 as of Updates');

  const group = await runJob('/api/vms/checkpoint', { paths: [folder, target], name: 'Both' });
  assert.equal(group.job.state, 'done', JSON.stringify(group.job.error));
  assert.equal(group.job.result.checkpoints.length, 2);
  model.create(group.job.result.checkpoints.find((c: any) => c.folder === folder).checkpoint.id, 'Both');
  await check('after the group checkpoint');
  const groupId = group.job.result.group as string;
  assertError(await api.post('/api/vms/checkpoint/remove', { paths: [folder, target], group: 'not-a-group' }), 400, 'INVALID_ARGUMENT');
  const ungrouped = await runJob('/api/vms/checkpoint/remove', { paths: [folder, target], group: groupId });
  assert.equal(ungrouped.job.state, 'done', JSON.stringify(ungrouped.job.error));
  assert.deepEqual(ungrouped.job.result.vms.map((v: any) => [v.folder, v.running, v.result.removed.map((c: any) => c.name)]), [[folder, false, ['Both']], [target, false, ['Both']]]);
  model.remove(group.job.result.checkpoints.find((c: any) => c.folder === folder).checkpoint.id, false);
  await check('after the group removal');
  assert.ok(!(await readManifest(target)).checkpoints.some((c) => c.group === groupId), 'the other member lost it too');
  const { vms } = ok(await api.get('/api/vms'));
  assert.deepEqual(vms.map((v: any) => v.folder).sort(), [target, join(root, 'other-export'), join(root, 'named-export'), folder].sort());
});

test('refusals: no token, paths outside the roots, engine errors with their codes, nothing changed', async () => {
  const before = ok(await api.get(`/api/vm?path=${encodeURIComponent(folder)}`)).vm;
  const body = { path: folder, checkpoint: ids.Updates, subtree: true };
  assertError(await request(server.port, 'POST', '/api/vm/remove', { body }), 403, 'FORBIDDEN');
  assertError(await request(server.port, 'POST', '/api/vm/remove', { body, headers: { cookie: `diskchain-token-${server.port}=${server.token}` } }), 403, 'FORBIDDEN');
  assertError(await request(server.port, 'GET', `/api/vm?path=${encodeURIComponent(folder)}`), 403, 'FORBIDDEN');
  for (const path of [work, '/etc', '../', join(work, 'elsewhere')]) {
    assertError(await api.get(`/api/vm?path=${encodeURIComponent(path)}`), 403, 'PATH_NOT_ALLOWED');
    assertError(await api.post('/api/vm/remove', { ...body, path }), 403, 'PATH_NOT_ALLOWED');
    assertError(await api.post('/api/vm/checkpoint', { path }), 403, 'PATH_NOT_ALLOWED');
  }
  assertError(await api.post('/api/vm/export', { path: folder, checkpoint: ids.Updates, target: join(work, 'out') }), 403, 'PATH_NOT_ALLOWED');
  assertError(await api.post('/api/vms/checkpoint', { paths: [folder, folder] }), 400, 'INVALID_ARGUMENT');
  assertError(await api.post('/api/vm/remove', { path: folder, checkpoint: ids.Updates, subtree: 'yes' }), 400, 'INVALID_ARGUMENT');
  assertError(await api.get(`/api/vm?path=${encodeURIComponent(root)}`), 404, 'NOT_FOUND');
  const missing = await runJob('/api/vm/remove', { path: folder, checkpoint: 'no-such-checkpoint', subtree: false });
  assert.equal(missing.job.state, 'failed');
  assert.equal(missing.job.error.code, 'CHECKPOINT_NOT_FOUND');
  // Another program holds the VM: the engine's lock refuses, and the job says so.
  const holder = await openVm(folder);
  try {
    const busy = await runJob('/api/vm/checkpoint', { path: folder });
    assert.equal(busy.job.state, 'failed');
    assert.equal(busy.job.error.code, 'VM_BUSY');
  } finally {
    await holder.close();
  }
  const afterwards = ok(await api.get(`/api/vm?path=${encodeURIComponent(folder)}`)).vm;
  assert.deepEqual(afterwards.checkpoints, before.checkpoints, 'no refusal changed the tree');
  assert.ok(existsSync(folder));
});

test('recovery: a scanned folder imported as a VM (copied): its layers checkpoints, Now reads as the newest leaf', async () => {
  const lost = join(root, 'lost-host');
  const chain = await buildChain(lost, 'vhdx', 7);
  const expected = await chainHash(chain[3]!);
  const scan = await runJob('/api/recovery/scan', { path: lost });
  assert.equal(scan.job.state, 'done');
  const target = join(root, 'recovered');
  assertError(await api.post('/api/recovery/import', { scan: scan.job.id, target: join(work, 'outside-vm'), adopt: 'copy' }), 403, 'PATH_NOT_ALLOWED');
  const imported = await runJob('/api/recovery/import', { scan: scan.job.id, target, adopt: 'copy', name: 'recovered' });
  assert.equal(imported.job.state, 'done', JSON.stringify(imported.job.error));
  assert.equal(imported.job.result.checkpoints.length, 3, 'base, c1 and c2 become checkpoints');
  for (const f of chain) assert.ok(existsSync(f), 'a copy leaves the folder as it was');
  const vm = await openVm(target, { lock: 'read' });
  try {
    assert.equal(createHash('sha256').update(await readWhole(vm, 'disk0')).digest('hex'), expected, 'Now reads as the newest leaf did');
  } finally {
    await vm.close();
  }
  const { vms } = ok(await api.get('/api/vms'));
  assert.ok(vms.some((v: any) => v.folder === target && v.checkpoints === 3));
});
