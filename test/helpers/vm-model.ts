/**
 * A plain model of a VM's checkpoint tree and of each disk's content per checkpoint, and the checks
 * that hold a real VM folder to it: the tree (ids, names, parents, Now's parent) from vm.json as read
 * from disk, and every checkpoint's and Now's content read through its chain.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { VirtualMachine } from '../../src/api/vm.js';
import { openDisk } from '../../src/chain/open-disk.js';
import { readManifest } from '../../src/checkpoint/folder.js';
import { pyvhdiSha256 } from './oracles.js';

export interface ModelCheckpoint {
  id: string;
  name: string;
  parent: string | null;
  content: Buffer[];
}

export class VmModel {
  checkpoints = new Map<string, ModelCheckpoint>();
  now: { parent: string | null; content: Buffer[] };

  constructor(sizes: number[]) {
    this.now = { parent: null, content: sizes.map((s) => Buffer.alloc(s)) };
  }

  clone(): VmModel {
    const m = new VmModel([]);
    for (const [id, c] of this.checkpoints) m.checkpoints.set(id, { ...c, content: c.content.map((b) => Buffer.from(b)) });
    m.now = { parent: this.now.parent, content: this.now.content.map((b) => Buffer.from(b)) };
    return m;
  }

  create(id: string, name: string): void {
    this.checkpoints.set(id, { id, name, parent: this.now.parent, content: this.now.content.map((b) => Buffer.from(b)) });
    this.now.parent = id;
  }

  write(disk: number, offset: number, data: Uint8Array): void {
    this.now.content[disk]!.set(data, offset);
  }

  apply(id: string): void {
    const c = this.checkpoints.get(id)!;
    this.now = { parent: id, content: c.content.map((b) => Buffer.from(b)) };
  }

  remove(id: string, subtree: boolean): void {
    const gone = new Set([id]);
    if (subtree) {
      for (let grew = true; grew; ) {
        grew = false;
        for (const c of this.checkpoints.values()) if (c.parent && gone.has(c.parent) && !gone.has(c.id)) (gone.add(c.id), (grew = true));
      }
    }
    const up = (p: string | null): string | null => {
      while (p !== null && gone.has(p)) p = this.checkpoints.get(p)!.parent;
      return p;
    };
    for (const c of this.checkpoints.values()) if (!gone.has(c.id)) c.parent = up(c.parent);
    this.now.parent = up(this.now.parent);
    for (const g of gone) this.checkpoints.delete(g);
  }

  rename(id: string, name: string): void {
    this.checkpoints.get(id)!.name = name;
  }

  ids(): string[] {
    return [...this.checkpoints.keys()];
  }
}

export async function readWhole(vm: VirtualMachine, disk: string, checkpoint?: string): Promise<Buffer> {
  const chain = await vm.openDisk(disk, checkpoint ? { checkpoint } : {});
  try {
    const buf = Buffer.alloc(chain.virtualSize);
    await chain.read(buf, 0);
    return buf;
  } finally {
    await chain.close();
  }
}

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** The tree in vm.json (read from disk, validated) and every content, against the model. */
export async function assertMatches(vm: VirtualMachine, model: VmModel, where: string): Promise<void> {
  const onDisk = await readManifest(vm.folder);
  assert.deepEqual(onDisk, vm.manifest, `${where}: vm.json on disk differs from the open VM's manifest`);
  const tree = (cs: Array<{ id: string; name: string; parent: string | null }>): string[] => cs.map((c) => `${c.id} ${JSON.stringify(c.name)} <- ${c.parent}`).sort();
  assert.deepEqual(tree(onDisk.checkpoints), tree([...model.checkpoints.values()]), `${where}: the checkpoint tree`);
  assert.equal(onDisk.now.parent, model.now.parent, `${where}: Now's parent`);
  const disks = onDisk.disks.map((d) => d.id);
  for (const c of model.checkpoints.values()) {
    for (const [i, d] of disks.entries()) {
      const got = await readWhole(vm, d, c.id);
      if (!got.equals(c.content[i]!)) assert.fail(`${where}: checkpoint "${c.name}" disk ${d} reads ${sha(got)}, the model has ${sha(c.content[i]!)}`);
    }
  }
  for (const [i, d] of disks.entries()) {
    const got = await readWhole(vm, d);
    if (!got.equals(model.now.content[i]!)) assert.fail(`${where}: Now's disk ${d} reads ${sha(got)}, the model has ${sha(model.now.content[i]!)}`);
  }
}

/**
 * Every chain of the VM read by pyvhdi (libvhdi, an independent reader): each checkpoint's and Now's
 * layers, linked with set_parent, hash as the model says. libvhdi 20221124 misreads a differencing
 * VHDX layer that has no sector bitmap block yet (a layer nothing was written into: it reads the
 * bitmap from file offset 0 and returns the header at 64 KiB for one sector), so VHDX chains with
 * such a layer are left to diskchain's reader and counted in the result.
 */
export async function assertPyvhdiReads(vm: VirtualMachine, model: VmModel): Promise<{ checked: number; skipped: number }> {
  let checked = 0;
  let skipped = 0;
  const emptyDifferencing = new Set<string>();
  for (const n of vm.manifest.nodes) {
    const disk = await openDisk(join(vm.folder, n.file));
    if (disk.format === 'vhdx' && disk.diskType === 'differencing' && (await disk.allocatedBytes()) === 0) emptyDifferencing.add(join(vm.folder, n.file));
    await disk.close();
  }
  const m = vm.manifest;
  const chainFiles = (node: string): string[] => {
    const out: string[] = [];
    for (let at: string | null = node; at !== null; ) {
      const n = m.nodes.find((x) => x.id === at)!;
      out.push(join(vm.folder, n.file));
      at = n.parent;
    }
    return out;
  };
  const check = (nodes: Record<string, string>, content: Buffer[], what: string): void => {
    m.disks.forEach((d, i) => {
      const files = chainFiles(nodes[d.id]!);
      if (files.some((f) => emptyDifferencing.has(f))) return void skipped++;
      const [leaf, ...parents] = files;
      checked++;
      assert.equal(pyvhdiSha256(leaf!, parents), sha(content[i]!), `pyvhdi reads ${what}, disk ${d.id}, differently`);
    });
  };
  for (const c of m.checkpoints) check(c.disks, model.checkpoints.get(c.id)!.content, `checkpoint "${c.name}"`);
  check(m.now.disks, model.now.content, 'Now');
  return { checked, skipped };
}

/** An exported (flattened) disk against the expected bytes, with an independent reader per format. */
export function assertExportedDisk(path: string, format: string, expected: Buffer, scratch: string): void {
  if (format === 'raw') {
    const got = readFileSync(path);
    assert.ok(got.equals(expected), `exported raw ${path} differs`);
  } else if (format === 'vhdx') {
    const raw = join(scratch, 'expected.raw');
    writeFileSync(raw, expected);
    // qemu-img compare exits 0 when the contents are identical (1 when they differ).
    execFileSync('qemu-img', ['compare', '-f', 'vhdx', '-F', 'raw', path, raw], { stdio: 'pipe' });
  } else {
    assert.equal(pyvhdiSha256(path), sha(expected), `pyvhdi reads the exported VHD ${path} differently`);
  }
}
