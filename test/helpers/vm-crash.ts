/**
 * Shared by the VM crash and failure tests: the CLI run as a child process (killed or not), a VM's
 * "signature" (its tree by names with the sha256 of every disk of every checkpoint and Now, read
 * without recovery), writes into Now, a two-disk template VM, and the recovery check.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createVm, openVm } from '../../src/api/vm.js';
import { Rng } from './vhdx-util.js';
import { readWhole } from './vm-model.js';
import { CLI as MAIN } from './cli.js';

const MIB = 1024 * 1024;

export function dc(args: string[], env: Record<string, string> = {}): { status: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [MAIN, ...args], { env: { ...process.env, ...env }, encoding: 'utf8' });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/** The tree by names and every content's hash (read-only, no recovery). */
export async function signature(folder: string): Promise<string> {
  const vm = await openVm(folder, { lock: 'none' });
  try {
    const m = vm.manifest;
    const nameOf = (id: string | null): string => (id === null ? '-' : m.checkpoints.find((c) => c.id === id)!.name);
    const hashes = async (checkpoint?: string): Promise<string> => {
      const out: string[] = [];
      for (const d of m.disks) out.push(createHash('sha256').update(await readWhole(vm, d.id, checkpoint)).digest('hex').slice(0, 12));
      return out.join(',');
    };
    const lines: string[] = [];
    for (const c of m.checkpoints) lines.push(`${c.name} <- ${nameOf(c.parent)} ${await hashes(c.id)}`);
    lines.sort();
    lines.push(`Now <- ${nameOf(m.now.parent)} ${await hashes()}`);
    return lines.join('\n');
  } finally {
    await vm.close();
  }
}

export async function writeInto(folder: string, disk: string, offset: number, length: number, seed: number): Promise<void> {
  const vm = await openVm(folder);
  try {
    const chain = await vm.openDisk(disk, { writable: true });
    await chain.write(new Rng(seed).fill(new Uint8Array(length)), offset);
    await chain.close();
  } finally {
    await vm.close();
  }
}

/** A VM with two disks (VHDX and VHD) and the tree A -> B -> Now, data in every layer. */
export async function makeTemplate(folder: string): Promise<void> {
  await createVm(folder, { newDisks: [{ size: 4 * MIB, format: 'vhdx' }, { size: 3 * MIB, format: 'vhd' }] });
  await writeInto(folder, 'disk0', 0, 3 * MIB, 1);
  await writeInto(folder, 'disk1', MIB, 512 * 1024, 2);
  let vm = await openVm(folder);
  await vm.checkpoint({ name: 'A' });
  await vm.close();
  await writeInto(folder, 'disk0', 2 * MIB, 64 * 1024, 3);
  await writeInto(folder, 'disk1', 0, 4096, 4);
  vm = await openVm(folder);
  await vm.checkpoint({ name: 'B' });
  await vm.close();
  await writeInto(folder, 'disk0', 512 * 1024, 8192, 5);
  await writeInto(folder, 'disk1', 2 * MIB, 64 * 1024, 6);
}

/** The next command: opening the VM for writing settles the interrupted operation; then vm check finds nothing. */
export async function recoverAndCheck(folder: string, where: string): Promise<void> {
  const vm = await openVm(folder);
  try {
    const report = await vm.check();
    assert.deepEqual(report.findings.filter((f) => f.severity !== 'info'), [], `${where}: vm check after recovery`);
  } finally {
    await vm.close();
  }
}

/**
 * A crash state of an operation that changes a VM from `oldSig` to `newSig` (signature()): the VM reads
 * as one or the other before recovery and after it, and a committed change is never rolled back.
 * Returns whether the VM ended with the change.
 */
export async function recoverOldOrNew(folder: string, where: string, oldSig: string, newSig: string): Promise<boolean> {
  const seen = await signature(folder);
  assert.ok(seen === oldSig || seen === newSig, `before recovery the VM reads as neither the old nor the new tree:\n${seen}`);
  await recoverAndCheck(folder, where);
  const afterwards = await signature(folder);
  assert.ok(afterwards === oldSig || afterwards === newSig, `after recovery the VM is neither old nor new:\n${afterwards}`);
  if (seen === newSig) assert.equal(afterwards, newSig, 'a committed change was rolled back');
  return afterwards === newSig;
}
