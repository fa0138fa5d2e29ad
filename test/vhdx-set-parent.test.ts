/**
 * VhdxDisk.setParent (§2.6.2.6 through the log, §2.3) and the dataWriteGuid open option (§2.2.2.1):
 * short and very long paths (the locator item must move), reopen, check, the chain's bytes unchanged,
 * pyvhdi agreeing, parent_linkage2, crash safety (every crash state, and real SIGKILLs), hostile calls.
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { inspect } from '../src/api/info.js';
import { identityMatches } from '../src/chain/identity.js';
import { vhdxDriver } from '../src/formats/vhdx/driver.js';
import type { VhdxDisk } from '../src/formats/vhdx/disk.js';
import type { LinkIdentity, ParentLinkUpdate, ParentReference } from '../src/formats/types.js';
import { FileSource } from '../src/io/file-source.js';
import { NULL_GUID, randomGuid } from '../src/io/guid.js';
import { MemorySource } from '../src/io/memory-source.js';
import { pyvhdiRefuses, pyvhdiSha256, requireOracle } from './helpers/oracles.js';
import { assertCheckClean, assertCode, assertOneOf, chainSha, crashStates, layerFingerprint, linkFor, runSetParentWriter } from './helpers/set-parent-util.js';
import { RecordingSource } from './helpers/vhd-util.js';
import { relayoutMetadata } from './helpers/vhdx-metadata.js';
import { describeFindings, fileSha256, MIB, randomBytesFrom, Rng, sha256, tempDir } from './helpers/vhdx-util.js';
import { CLI } from './helpers/cli.js';

const SIZE = 12 * MIB + 512 * 7;
let root: string;
let cleanup: () => void;
before(() => ({ dir: root, cleanup } = tempDir('diskchain-vhdx-setparent-')));
after(() => cleanup?.());

let dirNo = 0;
function freshDir(): string {
  const d = join(root, `t${++dirNo}`);
  mkdirSync(d);
  return d;
}

const open = async (path: string, writable = false, dataWriteGuid?: string): Promise<VhdxDisk> =>
  (await vhdxDriver.open(await FileSource.open(path, { writable }), { writable, ...(dataWriteGuid ? { dataWriteGuid } : {}) })) as VhdxDisk;

/** Opens `path` read-only, runs `fn`, closes. */
async function peek<T>(path: string, fn: (disk: VhdxDisk) => T | Promise<T>): Promise<T> {
  const disk = await open(path);
  try {
    return await fn(disk);
  } finally {
    await disk.close();
  }
}

async function checkFindings(path: string) {
  const src = await FileSource.open(path);
  try {
    return await vhdxDriver.check(src);
  } finally {
    await src.close();
  }
}

/** Random writes into `disk` and `model` (sector-granular, some straddling blocks). */
async function scribble(disk: VhdxDisk, model: Uint8Array, seed: number, count: number): Promise<void> {
  const rng = new Rng(seed);
  const sectors = SIZE / 512;
  for (let i = 0; i < count; i++) {
    const first = rng.int(sectors);
    const n = Math.min(sectors - first, 1 + rng.int(i % 3 === 0 ? 5000 : 40));
    const data = randomBytesFrom(rng.u32(), n * 512);
    await disk.write(data, first * 512);
    model.set(data, first * 512);
  }
}

/** A dynamic base and a differencing child (both written to); returns the model of the chain. */
async function makeChain(d: string, seed: number): Promise<{ base: string; child: string; baseId: LinkIdentity; model: Uint8Array }> {
  const model = new Uint8Array(SIZE);
  const base = join(d, 'base.vhdx');
  const b = (await vhdxDriver.create(await FileSource.create(base), { diskType: 'dynamic', virtualSize: SIZE, blockSize: MIB })) as VhdxDisk;
  await scribble(b, model, seed, 12);
  const baseId = b.identity();
  await b.close();
  const child = join(d, 'child.avhdx');
  const c = (await vhdxDriver.create(await FileSource.create(child), {
    diskType: 'differencing', virtualSize: SIZE,
    parent: { identity: baseId, virtualSize: SIZE, logicalSectorSize: 512, physicalSectorSize: 4096, relativePath: '.\\base.vhdx', absolutePath: base },
  })) as VhdxDisk;
  await scribble(c, model, seed + 1, 12);
  await c.close();
  return { base, child, baseId, model };
}

/** A byte copy of `src` at `dst` given a new DataWriteGuid by rewriting its first sector unchanged. */
async function copyAsNewParent(src: string, dst: string): Promise<LinkIdentity> {
  mkdirSync(dirname(dst), { recursive: true });
  copyFileSync(src, dst);
  const disk = await open(dst, true);
  const sector = new Uint8Array(512);
  await disk.read(sector, 0);
  await disk.write(sector, 0);
  const id = disk.identity();
  await disk.close();
  return id;
}

const locatorItem = (d: VhdxDisk) => d.layout.metadataEntries.find((e) => e.itemId === 'a8d35f2d-b30b-454d-abf7-d3d84834ab0c' && !e.isUser)!;

test('setParent with short and very long paths: the item moves when it must, reopen agrees, check is clean, the chain reads the same, pyvhdi agrees', async (t) => {
  const d = freshDir();
  const { base, child, model } = await makeChain(d, 10);
  relayoutMetadata(child, { extraLocatorEntries: [['diskchain_test_note', 'kept as it is']] });
  const oldBase = join(d, 'old-base.vhdx');
  renameSync(base, oldBase);
  const longDir = join(d, ...Array.from({ length: 12 }, (_, i) => `${i}-${'long-folder-name-'.repeat(11)}`));
  const longParent = join(longDir, 'p-long.vhdx');
  const shortParent = join(d, 'p.vhdx');
  const ids = { long: await copyAsNewParent(oldBase, longParent), short: await copyAsNewParent(oldBase, shortParent) };
  const steps: Array<{ name: string; parent: string; link: ParentLinkUpdate; moves: boolean }> = [
    { name: 'long relative and absolute paths', parent: longParent, link: linkFor(child, longParent, ids.long), moves: true },
    { name: 'short paths', parent: shortParent, link: linkFor(child, shortParent, ids.short), moves: false },
    { name: 'a 32000-character Windows absolute path', parent: longParent, link: linkFor(child, longParent, ids.long, { absolutePath: `C:\\${'x'.repeat(32000)}\\p-long.vhdx` }), moves: false },
  ];
  const pyvhdi = requireOracle(t, 'pyvhdi');
  for (const step of steps) {
    const [beforeId, beforeFile, beforeItem, beforePrint] = await peek(child, async (p) => [p.identity(), p.header.fileWriteGuid, locatorItem(p), await layerFingerprint(p)] as const);

    const disk = await open(child, true);
    await disk.setParent(step.link);
    const inSession = disk.parent!;
    assert.deepEqual(inSession.expected, step.link.identity, `${step.name}: expected identity`);
    // absolute_win32_path only for a path Windows can follow; a POSIX one is left out (docs/formats/vhdx.md).
    const windows = /^([A-Za-z]:\\|\\\\)/.test(step.link.absolutePath);
    assert.deepEqual(inSession.locators.map((l) => [l.key, l.path]), [['relative_path', step.link.relativePath], ...(windows ? [['absolute_win32_path', step.link.absolutePath]] : [])]);
    assert.deepEqual(disk.identity(), beforeId, `${step.name}: DataWriteGuid changed (§2.2.2.1 says it must not)`);
    await disk.close();

    const after = await open(child);
    assert.deepEqual(after.parent, inSession, `${step.name}: reopened parent reference`);
    assert.deepEqual(after.identity(), beforeId);
    assert.notEqual(after.header.fileWriteGuid, beforeFile, `${step.name}: FileWriteGuid must change with the file`);
    assert.equal((after.details().parentLocator as Record<string, string>).diskchain_test_note, 'kept as it is', 'unknown locator key lost');
    const item = locatorItem(after);
    if (step.moves) assert.notEqual(item.offset, beforeItem.offset, `${step.name}: the item should have moved`);
    else assert.equal(item.offset, beforeItem.offset, `${step.name}: the item should have stayed`);
    assert.equal(await layerFingerprint(after), beforePrint, `${step.name}: the layer's own contents changed`);
    await after.close();
    await assertCheckClean(vhdxDriver, child, step.name);
    assert.equal(await chainSha(child, step.parent), sha256(model), `${step.name}: chain content`);
    if (pyvhdi) {
      assert.equal(pyvhdiSha256(child, [step.parent]), sha256(model), `${step.name}: pyvhdi reads the chain differently`);
      assert.ok(pyvhdiRefuses(child, oldBase), `${step.name}: pyvhdi accepted the old parent`);
    }
  }
});

test('setParent between writes of one session: pending BAT changes are committed first, later writes land, reopen and check agree', async () => {
  const d = freshDir();
  const { base, child, model } = await makeChain(d, 15);
  const parent = join(d, 'p2.vhdx');
  const id = await copyAsNewParent(base, parent);
  const disk = await open(child, true);
  await scribble(disk, model, 16, 8);
  await disk.setParent(linkFor(child, parent, id, { absolutePath: `C:\\${'w'.repeat(3000)}\\p2.vhdx` }));
  await scribble(disk, model, 17, 8);
  await disk.setParent(linkFor(child, parent, id));
  await scribble(disk, model, 18, 8);
  await disk.close();
  await assertCheckClean(vhdxDriver, child, 'after the session');
  assert.equal(await chainSha(child, parent), sha256(model));
});

test('parent_linkage2: kept when given, accepted by identityMatches, removed when not given; with the dataWriteGuid open option a merge-style write keeps the chain linked', async () => {
  const d = freshDir();
  const { base, child, baseId, model } = await makeChain(d, 20);
  const alt = randomGuid();
  const disk = await open(child, true);
  await disk.setParent(linkFor(child, base, baseId, { alternateDataWriteGuid: `{${alt.toUpperCase()}}` }));
  await disk.close();
  let ref = await peek(child, (p) => p.parent!);
  assert.equal(ref.alternateDataWriteGuid, alt);
  assert.ok(identityMatches(ref, { format: 'vhdx', dataWriteGuid: alt }), 'parent carrying parent_linkage2 refused');
  assert.ok(identityMatches(ref, baseId), 'parent carrying parent_linkage refused');
  assert.ok(!identityMatches(ref, { format: 'vhdx', dataWriteGuid: randomGuid() }));

  // The parent is written in a session whose DataWriteGuid is the alternate: the child still names it.
  const parent = await open(base, true, alt);
  const sector = new Uint8Array(512);
  await parent.read(sector, 4096);
  await parent.write(sector, 4096);
  await parent.close();
  assert.deepEqual(await peek(base, (p) => p.identity()), { format: 'vhdx', dataWriteGuid: alt });
  assert.equal(await chainSha(child, base), sha256(model));
  // info says which of the two recorded identities the parent carries.
  assert.equal((await inspect(child)).parent?.matchedBy, 'alternate');
  const shown = spawnSync('node', [CLI, 'info', child], { encoding: 'utf8' });
  assert.equal(shown.status, 0, shown.stderr);
  assert.match(shown.stdout, /parent identity\s+matches through parent_linkage2/);

  const again = await open(child, true);
  await again.setParent(linkFor(child, base, { format: 'vhdx', dataWriteGuid: alt }));
  await again.close();
  const reopened = await open(child);
  ref = reopened.parent!;
  assert.equal(ref.alternateDataWriteGuid, undefined);
  assert.equal((reopened.details().parentLocator as Record<string, string>).parent_linkage2, undefined);
  assert.ok(identityMatches(ref, { format: 'vhdx', dataWriteGuid: alt }));
  assert.ok(!identityMatches(ref, baseId), 'the old DataWriteGuid still matches');
  await reopened.close();
  await assertCheckClean(vhdxDriver, child, 'after removing parent_linkage2');
  const relinked = await inspect(child);
  assert.equal(relinked.parent?.matchedBy, 'primary');
  assert.equal(relinked.parent?.identityMatches, true);
});

test('dataWriteGuid open option: the first write sets exactly it; read-only, write-free and setParent-only sessions leave DataWriteGuid alone', async () => {
  const d = freshDir();
  const { child } = await makeChain(d, 30);
  const dwg0 = await peek(child, (p) => p.identity());
  const g = randomGuid();
  const sha0 = fileSha256(child);
  const ro = await open(child, false, g);
  assert.deepEqual(ro.identity(), dwg0);
  await ro.close();
  await (await open(child, true, g)).close();
  assert.equal(fileSha256(child), sha0, 'a write-free writable session changed the file');

  const linkOnly = await open(child, true, g);
  await linkOnly.setParent({ identity: linkOnly.parent!.expected, relativePath: '.\\base.vhdx', absolutePath: join(d, 'base.vhdx') });
  await linkOnly.close();
  assert.deepEqual(await peek(child, (p) => p.identity()), dwg0, 'setParent changed DataWriteGuid');

  const rw = await open(child, true, `{${g.toUpperCase()}}`);
  await rw.write(new Uint8Array(1024).fill(7), 8192);
  await rw.flush();
  await rw.write(new Uint8Array(512).fill(8), SIZE - 512);
  assert.deepEqual(rw.identity(), { format: 'vhdx', dataWriteGuid: g });
  await rw.close();
  const after = await open(child);
  assert.deepEqual(after.identity(), { format: 'vhdx', dataWriteGuid: g });
  assert.ok(![g, NULL_GUID].includes(after.header.fileWriteGuid), 'FileWriteGuid must stay random');
  await after.close();
  for (const bad of ['not-a-guid', NULL_GUID, '{1234}']) {
    await assertCode(() => vhdxDriver.open(new MemorySource(readFileSync(child), { name: 'm.avhdx' }), { writable: true, dataWriteGuid: bad }), 'INVALID_ARGUMENT', `dataWriteGuid ${bad}`);
  }
});

/** A child in memory whose locator comes first (so a longer one must move), with its old and new references. */
async function recordSetParent(link: ParentLinkUpdate): Promise<{ rec: RecordingSource; refs: ParentReference[]; print: string; id: LinkIdentity }> {
  const d = freshDir();
  const { child } = await makeChain(d, 40);
  relayoutMetadata(child);
  const initial = new Uint8Array(readFileSync(child));
  const rec = new RecordingSource(new MemorySource(initial, { name: 'child.avhdx' }), initial);
  const disk = (await vhdxDriver.open(rec, { writable: true })) as VhdxDisk;
  const [old, print, id] = [disk.parent!, await layerFingerprint(disk), disk.identity()];
  await disk.setParent(link);
  const refs = [old, disk.parent!];
  await disk.close();
  return { rec, refs, print, id };
}

for (const [name, link] of [
  ['a long link that must move the item', { identity: { format: 'vhdx', dataWriteGuid: randomGuid() }, relativePath: `..\\${'r'.repeat(3000)}\\p.vhdx`, absolutePath: `C:\\${'a'.repeat(5000)}\\p.vhdx`, alternateDataWriteGuid: randomGuid() }],
  ['a short link rewritten in place', { identity: { format: 'vhdx', dataWriteGuid: randomGuid() }, relativePath: '.\\q.vhdx', absolutePath: 'C:\\q.vhdx' }],
] as Array<[string, ParentLinkUpdate]>) {
  test(`crash at every write of setParent (${name}), torn at every page too: opens, checks clean, old or new parent whole`, async () => {
    const { rec, refs, print, id } = await recordSetParent(link);
    const seen = [0, 0];
    for await (const { label, source } of crashStates(rec)) {
      const errs = (await vhdxDriver.check(source)).filter((f) => f.severity === 'error');
      assert.deepEqual(errs, [], `${label}: check errors`);
      const ro = await vhdxDriver.open(source);
      const which = assertOneOf(ro.parent, refs, label);
      seen[which]!++;
      assert.equal(await layerFingerprint(ro), print, `${label}: the layer's contents changed`);
      assert.deepEqual(ro.identity(), id, `${label}: DataWriteGuid changed`);
      const rw = await vhdxDriver.open(source, { writable: true });
      assert.deepEqual(rw.parent, ro.parent, `${label}: replay into the file shows another parent`);
      assert.deepEqual(rw.identity(), id, `${label}: DataWriteGuid changed by the replay`);
      await rw.close();
      const left = (await vhdxDriver.check(source)).filter((f) => f.severity !== 'info');
      assert.deepEqual(left, [], `${label}: after a writable open:\n${describeFindings(left)}`);
    }
    assert.ok(seen[0]! > 0 && seen[1]! > 0, `states seen: old ${seen[0]}, new ${seen[1]}`);
  });
}

test('crash safety: setParent SIGKILLed at 30 moments, rounds cumulative: opens, checks clean, old or new parent whole', async (t) => {
  const d = freshDir();
  const { child } = await makeChain(d, 50);
  relayoutMetadata(child, { extraLocatorEntries: [['x_note', 'kept']] });
  const links: ParentLinkUpdate[] = [
    { identity: { format: 'vhdx', dataWriteGuid: randomGuid() }, relativePath: '.\\a.vhdx', absolutePath: 'C:\\vms\\a.vhdx' },
    { identity: { format: 'vhdx', dataWriteGuid: randomGuid() }, relativePath: `..\\${'b'.repeat(2500)}\\b.vhdx`, absolutePath: `C:\\${'c'.repeat(4000)}\\b.vhdx`, alternateDataWriteGuid: randomGuid() },
  ];
  const linksPath = join(d, 'links.json');
  writeFileSync(linksPath, JSON.stringify(links));
  // The references each link leaves, from a scratch copy.
  const scratch = join(d, 'scratch.avhdx');
  copyFileSync(child, scratch);
  const s = await open(scratch, true);
  const refs: ParentReference[] = [];
  for (const l of links) {
    await s.setParent(l);
    refs.push(s.parent!);
  }
  await s.close();
  const first = await open(child);
  const [print, id] = [await layerFingerprint(first), first.identity()];
  let current = first.parent!;
  await first.close();

  let killed = 0;
  let inFlight = 0;
  const codes = new Map<string, number>();
  for (let round = 0; round < 30; round++) {
    const sets = (round * 7) % 37 + new Rng(round).int(3);
    const outcome = await runSetParentWriter(child, linksPath, 100000, sets);
    const what = `round ${round} (killed after ${sets} calls returned, ${outcome.acked} returned by the end)`;
    assert.ok(outcome.acked >= sets, `${what}: killed before its event`);
    assert.equal(outcome.stderr, '', `${what}: writer failed`);
    if (outcome.killed) killed++;
    const allowed = outcome.acked === 0 ? [current, refs[0]!] : [refs[(outcome.acked - 1) % 2]!, refs[outcome.acked % 2]!];
    const sha = fileSha256(child);
    const findings = await checkFindings(child);
    assert.deepEqual(findings.filter((f) => f.severity === 'error'), [], `${what}: check errors`);
    for (const f of findings) codes.set(f.code, (codes.get(f.code) ?? 0) + 1);
    const ro = await open(child);
    inFlight += assertOneOf(ro.parent, allowed, what);
    assert.equal(await layerFingerprint(ro), print, `${what}: the layer's contents changed`);
    assert.deepEqual(ro.identity(), id, `${what}: DataWriteGuid changed`);
    await ro.close();
    assert.equal(fileSha256(child), sha, `${what}: a read-only open or check changed the file`);
    const rw = await open(child, true);
    assert.deepEqual(rw.parent, ro.parent, `${what}: replay shows another parent`);
    assert.deepEqual(rw.identity(), id, `${what}: replay changed DataWriteGuid`);
    await rw.close();
    await assertCheckClean(vhdxDriver, child, `${what}, after a writable open`);
    current = ro.parent!;
  }
  t.diagnostic(`kills ${killed}, rounds showing the call in flight ${inFlight}, findings before replay: ${[...codes].map(([c, n]) => `${c}×${n}`).join(' ') || 'none'}`);
  assert.ok(killed >= 28, `only ${killed} rounds ended in a kill`);
});

test('hostile: setParent on fixed and dynamic disks, read-only opens, wrong identities, bad paths and a full metadata region gives typed errors and leaves the file as it was', async () => {
  const d = freshDir();
  const link = (): ParentLinkUpdate => ({ identity: { format: 'vhdx', dataWriteGuid: randomGuid() }, relativePath: '.\\p.vhdx', absolutePath: 'C:\\p.vhdx' });
  for (const diskType of ['fixed', 'dynamic'] as const) {
    const path = join(d, `${diskType}.vhdx`);
    await (await vhdxDriver.create(await FileSource.create(path), { diskType, virtualSize: 4 * MIB, blockSize: MIB })).close();
    const sha = fileSha256(path);
    const disk = await open(path, true);
    await assertCode(() => disk.setParent(link()), 'UNSUPPORTED', diskType);
    await disk.close();
    assert.equal(fileSha256(path), sha, `${diskType}: file changed`);
  }
  const { child } = await makeChain(d, 60);
  const sha = fileSha256(child);
  const ro = await open(child);
  await assertCode(() => ro.setParent(link()), 'READ_ONLY', 'read-only open');
  await ro.close();
  const rw = await open(child, true);
  const cases: Array<[string, ParentLinkUpdate, string]> = [
    ['VHD identity', { ...link(), identity: { format: 'vhd', uniqueId: randomGuid(), timestamp: 1 } }, 'UNSUPPORTED'],
    ['malformed GUID', { ...link(), identity: { format: 'vhdx', dataWriteGuid: 'nope' } }, 'INVALID_ARGUMENT'],
    ['malformed parent_linkage2', { ...link(), alternateDataWriteGuid: '123' }, 'INVALID_ARGUMENT'],
    ['empty relative path', { ...link(), relativePath: '' }, 'INVALID_ARGUMENT'],
    ['path longer than a locator value holds', { ...link(), absolutePath: 'C:\\'.padEnd(40000, 'z') }, 'INVALID_ARGUMENT'],
  ];
  for (const [what, l, code] of cases) await assertCode(() => rw.setParent(l), code, what);
  await rw.close();
  await assertCode(() => rw.setParent(link()), 'INVALID_ARGUMENT', 'closed disk');
  assert.equal(fileSha256(child), sha, 'refused calls changed the file');

  relayoutMetadata(child, { fillRegion: true });
  const full = fileSha256(child);
  const f = await open(child, true);
  await assertCode(() => f.setParent({ ...link(), absolutePath: `C:\\${'n'.repeat(500)}.vhdx` }), 'NO_SPACE', 'full metadata region');
  await f.close();
  assert.equal(fileSha256(child), full, 'NO_SPACE changed the file');
  const g = await open(child, true);
  // No absolute_win32_path for a POSIX path, and a relative path as short as the old: fits in place.
  await g.setParent({ ...link(), absolutePath: '/srv/p.vhdx' });
  await g.close();
  await assertCheckClean(vhdxDriver, child, 'full region, shorter locator');
});
