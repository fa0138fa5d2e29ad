/**
 * VhdDisk.setParent (spec §Dynamic Disk Header Format: Parent Unique ID, Parent Time Stamp, Parent
 * Unicode Name, W2ku/W2ru locators): short and very long paths (the locator data must grow), our
 * chains and a Windows-made child, reopen, check, the chain's bytes unchanged, pyvhdi and qemu-img
 * agreeing, crash safety (every crash state, and real SIGKILLs), hostile calls.
 */
import { copyFileSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { vhdDriver } from '../src/formats/vhd/driver.js';
import type { LinkIdentity, ParentLinkUpdate, ParentReference, VirtualDisk } from '../src/formats/types.js';
import { FileSource } from '../src/io/file-source.js';
import { MemorySource } from '../src/io/memory-source.js';
import { pyvhdiRefuses, pyvhdiSha256, qemuImg, requireOracle } from './helpers/oracles.js';
import { assertCheckClean, assertCode, assertOneOf, chainSha, crashStates, layerFingerprint, linkFor, runSetParentWriter } from './helpers/set-parent-util.js';
import { RecordingSource } from './helpers/vhd-util.js';
import { realFixture, realFixtures } from './helpers/fixtures.js';
import { describeFindings, fileSha256, MIB, randomBytesFrom, Rng, sha256, tempDir } from './helpers/vhdx-util.js';

const SIZE = 6 * MIB;
/** libvhdi 20210425 misreads reads that span several smaller differencing blocks; 2 MiB (Windows' size) reads right. */
const BLOCK = 2 * MIB;
let root: string;
let cleanup: () => void;
before(() => ({ dir: root, cleanup } = tempDir('diskchain-vhd-setparent-')));
after(() => cleanup?.());

let dirNo = 0;
function freshDir(): string {
  const d = join(root, `t${++dirNo}`);
  mkdirSync(d);
  return d;
}

const open = async (path: string, writable = false): Promise<VirtualDisk> => vhdDriver.open(await FileSource.open(path, { writable }), { writable });

async function peek<T>(path: string, fn: (disk: VirtualDisk) => T | Promise<T>): Promise<T> {
  const disk = await open(path);
  try {
    return await fn(disk);
  } finally {
    await disk.close();
  }
}

/** Writes in whole, aligned 4 KiB units (libvhdi misreads partial bitmap bytes; see docs/formats/vhd.md). */
async function scribble(disk: VirtualDisk, model: Uint8Array, seed: number, count: number): Promise<void> {
  const rng = new Rng(seed);
  const units = SIZE / 4096;
  for (let i = 0; i < count; i++) {
    const first = rng.int(units);
    const n = Math.min(units - first, 1 + rng.int(i % 3 === 0 ? 200 : 6));
    const data = randomBytesFrom(rng.u32(), n * 4096);
    await disk.write(data, first * 4096);
    model.set(data, first * 4096);
  }
}

/** A new dynamic VHD at `path` holding `content` (so: same bytes, another identity). */
async function dynamicWith(path: string, content: Uint8Array): Promise<LinkIdentity> {
  mkdirSync(dirname(path), { recursive: true });
  const disk = await vhdDriver.create(await FileSource.create(path), { diskType: 'dynamic', virtualSize: content.length, blockSize: BLOCK });
  for (let off = 0; off < content.length; off += BLOCK) {
    const piece = content.subarray(off, off + BLOCK);
    if (piece.some((b) => b !== 0)) await disk.write(piece, off);
  }
  const id = disk.identity();
  await disk.close();
  return id;
}

async function makeChain(d: string, seed: number, childWrites = 10): Promise<{ base: string; child: string; baseModel: Uint8Array; model: Uint8Array }> {
  const baseModel = new Uint8Array(SIZE);
  new Rng(seed).fill(baseModel.subarray(0, 3 * MIB));
  const base = join(d, 'base.vhd');
  const baseId = await dynamicWith(base, baseModel);
  const model = baseModel.slice();
  const child = join(d, 'child.avhd');
  const c = await vhdDriver.create(await FileSource.create(child), {
    diskType: 'differencing', virtualSize: SIZE, blockSize: BLOCK,
    parent: { identity: baseId, virtualSize: SIZE, logicalSectorSize: 512, physicalSectorSize: 512, relativePath: '.\\base.vhd', absolutePath: base },
  });
  await scribble(c, model, seed + 1, childWrites);
  await c.close();
  return { base, child, baseModel, model };
}

/** The dynamic header at 512, with its checksum verified independently (one's complement of the byte sum). */
function headerAt512(path: string): Uint8Array {
  const h = new Uint8Array(readFileSync(path).subarray(512, 1536));
  let sum = 0;
  h.forEach((b, i) => (sum += i >= 36 && i < 40 ? 0 : b));
  assert.equal(new DataView(h.buffer).getUint32(36), ~sum >>> 0, 'dynamic header checksum');
  return h;
}

interface Step {
  name: string;
  parent: string;
  link: ParentLinkUpdate;
}

/** setParent, then everything a reader can ask: the reference, the header, check, the chain, pyvhdi and qemu. */
async function rewriteAndVerify(t: { diagnostic(s: string): void }, child: string, step: Step, expectedSha: string, stale: string, oracles: { pyvhdi: boolean; qemu: boolean }): Promise<void> {
  const [id, print] = await peek(child, async (p) => [p.identity(), await layerFingerprint(p)] as const);
  const headerBefore = headerAt512(child);
  const disk = await open(child, true);
  await disk.setParent!(step.link);
  const inSession = disk.parent!;
  assert.deepEqual(inSession.expected, step.link.identity, `${step.name}: expected identity`);
  // W2ku only for a path Windows can follow; a POSIX one is left out (docs/formats/vhd.md).
  const windows = WINDOWS_ABSOLUTE.test(step.link.absolutePath);
  assert.deepEqual(inSession.locators.map((l) => [l.key, l.path]), [...(windows ? [['W2ku', step.link.absolutePath]] : []), ['W2ru', step.link.relativePath]]);
  await disk.close();
  const after = await open(child);
  assert.deepEqual(after.parent, inSession, `${step.name}: reopened parent reference`);
  assert.deepEqual(after.identity(), id, `${step.name}: the child's own identity changed`);
  assert.equal(await layerFingerprint(after), print, `${step.name}: the layer's own contents changed`);
  const details = after.details() as { parentUnicodeName: string; parentLocators: Array<{ platformDataOffset: string; platformDataLength: number }> };
  t.diagnostic(`${step.name}: locator data at ${details.parentLocators.map((l) => `${l.platformDataOffset}+${l.platformDataLength}`).join(', ')}`);
  assert.equal(details.parentUnicodeName, windows ? step.link.absolutePath.slice(0, 256) : basename(step.link.absolutePath));
  await after.close();
  const headerAfter = headerAt512(child);
  assert.deepEqual([headerAfter.subarray(0, 36), headerAfter.subarray(768)], [headerBefore.subarray(0, 36), headerBefore.subarray(768)], 'bytes outside the parent fields changed');
  await assertCheckClean(vhdDriver, child, step.name);
  assert.equal(await chainSha(child, step.parent), expectedSha, `${step.name}: chain content`);
  if (oracles.pyvhdi) {
    assert.equal(pyvhdiSha256(child, [step.parent]), expectedSha, `${step.name}: pyvhdi reads the chain differently`);
    assert.ok(pyvhdiRefuses(child, stale), `${step.name}: pyvhdi accepted the old parent`);
  }
  if (oracles.qemu) {
    // qemu reads a differencing VHD as dynamic (ignoring the parent): the child's own bytes.
    const raw = `${child}.raw`;
    qemuImg(['convert', '--image-opts', `driver=vpc,force_size_calc=current_size,file.filename=${child}`, '-O', 'raw', raw]);
    assert.equal(sha256(readFileSync(raw)), print.split(' ')[0], `${step.name}: qemu-img reads the child differently`);
  }
}

test('setParent on our chain with short and very long paths (the locator data must grow): reopen, check, chain, pyvhdi and qemu-img agree', async (t) => {
  const d = freshDir();
  const { base, child, baseModel, model } = await makeChain(d, 7);
  const stale = join(d, 'old-base.vhd');
  renameSync(base, stale);
  const longDir = join(d, ...Array.from({ length: 12 }, (_, i) => `${i}-${'long-folder-name-'.repeat(11)}`));
  const longParent = join(longDir, 'p-long.vhd');
  const shortParent = join(d, 'p.vhd');
  const ids = { long: await dynamicWith(longParent, baseModel), short: await dynamicWith(shortParent, baseModel) };
  const oracles = { pyvhdi: requireOracle(t, 'pyvhdi'), qemu: requireOracle(t, 'qemu-img') };
  const steps: Step[] = [
    { name: 'long paths', parent: longParent, link: linkFor(child, longParent, ids.long) },
    { name: 'short paths', parent: shortParent, link: linkFor(child, shortParent, ids.short) },
    { name: 'a 32000-character Windows absolute path', parent: longParent, link: linkFor(child, longParent, ids.long, { absolutePath: `C:\\${'x'.repeat(32000)}\\p-long.vhd` }) },
    { name: 'short paths again', parent: shortParent, link: linkFor(child, shortParent, ids.short) },
  ];
  for (const step of steps) await rewriteAndVerify(t, child, step, sha256(model), stale, oracles);
});

test('setParent between writes of one session: blocks allocated before it and after it, reopen and check agree', async () => {
  const d = freshDir();
  const { child, baseModel, model } = await makeChain(d, 15, 0);
  const parent = join(d, 'p2.vhd');
  const id = await dynamicWith(parent, baseModel);
  const disk = await open(child, true);
  const put = async (data: Uint8Array, at: number): Promise<void> => {
    await disk.write(data, at);
    model.set(data, at);
  };
  await put(randomBytesFrom(1, 8192), 4096); // allocates block 0 where the footer was
  await disk.setParent!(linkFor(child, parent, id, { absolutePath: `C:\\${'w'.repeat(3000)}\\p2.vhd` }));
  await put(randomBytesFrom(2, 4096), 2 * BLOCK + 4096); // allocates block 1 after the new locator data
  await disk.setParent!(linkFor(child, parent, id));
  await put(randomBytesFrom(3, 4096), 4 * MIB); // block 2
  await disk.close();
  await assertCheckClean(vhdDriver, child, 'after the session');
  assert.equal(await chainSha(child, parent), sha256(model));
});

test('setParent on a Windows-made differencing VHD (fat-differential.vhd): reads the same over a new all-zero parent', async (t) => {
  const fixture = realFixture('fat-differential.vhd');
  const d = freshDir();
  const child = join(d, 'fat-differential.vhd');
  copyFileSync(fixture, child);
  const parent = join(d, 'zero-parent.vhd');
  const id = await dynamicWith(parent, new Uint8Array(4 * MIB));
  const stale = join(d, 'other.vhd');
  await dynamicWith(stale, new Uint8Array(4 * MIB));
  const expected = realFixtures().find((e) => e.name === 'fat-differential.vhd')!.expected.contentSha256OverZeroParent!;
  const oracles = { pyvhdi: requireOracle(t, 'pyvhdi'), qemu: requireOracle(t, 'qemu-img') };
  await rewriteAndVerify(t, child, { name: 'short', parent, link: linkFor(child, parent, id) }, expected, stale, oracles);
  const long = linkFor(child, parent, id, { absolutePath: `C:\\${'vm-folder\\'.repeat(900)}zero-parent.vhd` });
  await rewriteAndVerify(t, child, { name: 'long', parent, link: long }, expected, stale, oracles);
});

/** A drive or UNC path, the kind Hyper-V follows in W2ku. */
const WINDOWS_ABSOLUTE = /^([A-Za-z]:\\|\\\\)/;

const someId = (): Extract<LinkIdentity, { format: 'vhd' }> => ({ format: 'vhd', uniqueId: '0123abcd-4567-4890-8abc-def012345678', timestamp: 123456 });

/** Records setParent on a child in memory. Unless `grow`, an earlier long link moved the data past the blocks, leaving gaps. */
async function recordSetParent(link: ParentLinkUpdate, grow: boolean): Promise<{ rec: RecordingSource; refs: ParentReference[]; print: string; id: LinkIdentity }> {
  const { child } = await makeChain(freshDir(), grow ? 11 : 12);
  if (!grow) {
    const disk = await open(child, true);
    await disk.setParent!({ identity: someId(), relativePath: `.\\${'g'.repeat(600)}.vhd`, absolutePath: `C:\\${'h'.repeat(700)}.vhd` });
    await disk.close();
  }
  const initial = new Uint8Array(readFileSync(child));
  const rec = new RecordingSource(new MemorySource(initial, { name: 'child.avhd' }), initial);
  const disk = await vhdDriver.open(rec, { writable: true });
  const [old, print, id] = [disk.parent!, await layerFingerprint(disk), disk.identity()];
  await disk.setParent!(link);
  const refs = [old, disk.parent!];
  await disk.close();
  assert.equal((await rec.size()) > initial.length, grow, grow ? 'the data should have gone past the footer' : 'the data should have fitted in the gaps');
  return { rec, refs, print, id };
}

for (const [name, link, grow] of [
  ['long paths that need new space past the footer', { identity: someId(), relativePath: `..\\${'r'.repeat(3000)}\\p.vhd`, absolutePath: `C:\\${'a'.repeat(5000)}\\p.vhd` }, true],
  // A POSIX absolute path: W2ru only, which fits the one-sector gap the created locator left.
  ['short paths that fit in gaps an earlier rewrite left', { identity: someId(), relativePath: '.\\q.vhd', absolutePath: '/vms/q.vhd' }, false],
] as Array<[string, ParentLinkUpdate, boolean]>) {
  test(`crash at every write of setParent (${name}), torn at every page too: opens, checks clean, old or new parent whole`, async () => {
    const { rec, refs, print, id } = await recordSetParent(link, grow);
    const seen = [0, 0];
    for await (const { label, source } of crashStates(rec)) {
      // The footer moves before the data goes past it, so not even a warning (a missing footer) shows.
      const found = (await vhdDriver.check(source)).filter((f) => f.severity !== 'info');
      assert.deepEqual(found, [], `${label}: check findings:\n${describeFindings(found)}`);
      const disk = await vhdDriver.open(source);
      seen[assertOneOf(disk.parent, refs, label)]!++;
      assert.equal(await layerFingerprint(disk), print, `${label}: the layer's contents changed`);
      assert.deepEqual(disk.identity(), id, `${label}: identity changed`);
      const rw = await vhdDriver.open(source, { writable: true });
      assert.deepEqual(rw.parent, disk.parent, `${label}: a writable open shows another parent`);
      await rw.close();
      const left = (await vhdDriver.check(source)).filter((f) => f.severity !== 'info');
      assert.deepEqual(left, [], `${label}: after a writable open:\n${describeFindings(left)}`);
    }
    assert.ok(seen[0]! > 0 && seen[1]! > 0, `states seen: old ${seen[0]}, new ${seen[1]}`);
  });
}

test('crash safety: setParent SIGKILLed at 30 moments, rounds cumulative: opens, checks clean, old or new parent whole', async (t) => {
  const d = freshDir();
  const { child } = await makeChain(d, 13);
  const links: ParentLinkUpdate[] = [
    { identity: someId(), relativePath: '.\\a.vhd', absolutePath: 'C:\\vms\\a.vhd' },
    { identity: { format: 'vhd', uniqueId: 'fedcba98-7654-4321-8fed-cba987654321', timestamp: 0 }, relativePath: `..\\${'b'.repeat(2500)}\\b.vhd`, absolutePath: `C:\\${'c'.repeat(4000)}\\b.vhd` },
  ];
  const linksPath = join(d, 'links.json');
  writeFileSync(linksPath, JSON.stringify(links));
  const scratch = join(d, 'scratch.avhd');
  copyFileSync(child, scratch);
  const s = await open(scratch, true);
  const refs: ParentReference[] = [];
  for (const l of links) {
    await s.setParent!(l);
    refs.push(s.parent!);
  }
  await s.close();
  const [first, print, id] = await peek(child, async (p) => [p.parent!, await layerFingerprint(p), p.identity()] as const);
  let current = first;
  let killed = 0;
  let inFlight = 0;
  for (let round = 0; round < 30; round++) {
    const sets = (round * 7) % 23 + new Rng(round).int(3);
    const outcome = await runSetParentWriter(child, linksPath, 100000, sets);
    const what = `round ${round} (killed after ${sets} calls returned, ${outcome.acked} returned by the end)`;
    assert.ok(outcome.acked >= sets, `${what}: killed before its event`);
    assert.equal(outcome.stderr, '', `${what}: writer failed`);
    if (outcome.killed) killed++;
    const allowed = outcome.acked === 0 ? [current, refs[0]!] : [refs[(outcome.acked - 1) % 2]!, refs[outcome.acked % 2]!];
    const sha = fileSha256(child);
    await assertCheckClean(vhdDriver, child, `${what}, before any repair`);
    const ro = await open(child);
    inFlight += assertOneOf(ro.parent, allowed, what);
    assert.equal(await layerFingerprint(ro), print, `${what}: the layer's contents changed`);
    assert.deepEqual(ro.identity(), id, `${what}: identity changed`);
    current = ro.parent!;
    await ro.close();
    assert.equal(fileSha256(child), sha, `${what}: a read-only open or check changed the file`);
    await (await open(child, true)).close();
    await assertCheckClean(vhdDriver, child, `${what}, after a writable open`);
  }
  t.diagnostic(`kills ${killed}, rounds showing the call in flight ${inFlight}`);
  assert.ok(killed >= 28, `only ${killed} rounds ended in a kill`);
});

test('hostile: setParent on fixed and dynamic disks, read-only opens, wrong identities and bad paths gives typed errors and leaves the file as it was; dataWriteGuid is ignored', async () => {
  const d = freshDir();
  const link = (): ParentLinkUpdate => ({ identity: someId(), relativePath: '.\\p.vhd', absolutePath: 'C:\\p.vhd' });
  for (const diskType of ['fixed', 'dynamic'] as const) {
    const path = join(d, `${diskType}.vhd`);
    await (await vhdDriver.create(await FileSource.create(path), { diskType, virtualSize: 2 * MIB })).close();
    const sha = fileSha256(path);
    const disk = await open(path, true);
    await assertCode(() => disk.setParent!(link()), 'UNSUPPORTED', diskType);
    await disk.close();
    assert.equal(fileSha256(path), sha, `${diskType}: file changed`);
  }
  const { child } = await makeChain(d, 14);
  const sha = fileSha256(child);
  const ro = await open(child);
  await assertCode(() => ro.setParent!(link()), 'READ_ONLY', 'read-only open');
  await ro.close();
  const rw = await vhdDriver.open(await FileSource.open(child, { writable: true }), { writable: true, dataWriteGuid: 'ignored by VHD' });
  const cases: Array<[string, ParentLinkUpdate, string]> = [
    ['VHDX identity', { ...link(), identity: { format: 'vhdx', dataWriteGuid: '0123abcd-4567-4890-8abc-def012345678' } }, 'UNSUPPORTED'],
    ['malformed unique id', { ...link(), identity: { format: 'vhd', uniqueId: 'nope', timestamp: 1 } }, 'INVALID_ARGUMENT'],
    ['negative time stamp', { ...link(), identity: { ...someId(), timestamp: -1 } }, 'INVALID_ARGUMENT'],
    ['time stamp past 32 bits', { ...link(), identity: { ...someId(), timestamp: 2 ** 32 } }, 'INVALID_ARGUMENT'],
    ['empty absolute path', { ...link(), absolutePath: '' }, 'INVALID_ARGUMENT'],
    ['path longer than Windows allows', { ...link(), relativePath: '.\\'.padEnd(40000, 'z') }, 'INVALID_ARGUMENT'],
  ];
  for (const [what, l, code] of cases) await assertCode(() => rw.setParent!(l), code, what);
  await rw.close();
  await assertCode(() => rw.setParent!(link()), 'INVALID_ARGUMENT', 'closed disk');
  assert.equal(fileSha256(child), sha, 'refused calls changed the file');
});
