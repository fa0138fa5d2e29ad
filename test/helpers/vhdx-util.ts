import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import type { Extent, Finding, VirtualDisk } from '../../src/formats/types.js';

/** A small deterministic PRNG (mulberry32); the same seed gives the same stream everywhere. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0 || 0x9e3779b9;
  }
  /** A uint32. */
  u32(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }
  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor((this.u32() / 2 ** 32) * n);
  }
  bool(p = 0.5): boolean {
    return this.u32() / 2 ** 32 < p;
  }
  fill(buf: Uint8Array): Uint8Array {
    let i = 0;
    for (; i + 4 <= buf.length; i += 4) {
      const v = this.u32();
      buf[i] = v & 0xff;
      buf[i + 1] = (v >>> 8) & 0xff;
      buf[i + 2] = (v >>> 16) & 0xff;
      buf[i + 3] = v >>> 24;
    }
    for (; i < buf.length; i++) buf[i] = this.u32() & 0xff;
    return buf;
  }
}

/** `n` pseudo-random bytes from `seed`; never all zero for n >= 4 in practice, but callers must not rely on that. */
export function randomBytesFrom(seed: number, n: number): Uint8Array {
  return new Rng(seed).fill(new Uint8Array(n));
}

export const MIB = 1024 * 1024;

export function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

export function fileSha256(path: string): string {
  return sha256(readFileSync(path));
}

export function tempDir(prefix = 'diskchain-vhdx-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Asserts what the VirtualDisk contract says of map(): in order, exact cover, adjacent equal states merged. */
export function assertMapContract(extents: Extent[], offset: number, length: number, what = 'map'): void {
  let pos = offset;
  for (let i = 0; i < extents.length; i++) {
    const e = extents[i]!;
    assert.equal(e.offset, pos, `${what}: extent ${i} starts at ${e.offset}, expected ${pos}`);
    assert.ok(e.length > 0, `${what}: extent ${i} is empty`);
    assert.ok(['data', 'zero', 'transparent'].includes(e.state), `${what}: extent ${i} has state ${e.state}`);
    if (i > 0) assert.notEqual(extents[i - 1]!.state, e.state, `${what}: adjacent extents ${i - 1} and ${i} share state ${e.state} (not merged)`);
    pos += e.length;
  }
  assert.equal(pos, offset + length, `${what}: extents end at ${pos}, expected ${offset + length}`);
}

/**
 * Reads [offset, offset+target.length) of a child over a parent as a reader of the chain would:
 * data from the child, zeros for zero, the parent's bytes for transparent.
 */
export async function composeRead(child: VirtualDisk, readParent: (target: Uint8Array, offset: number) => Promise<void> | void, target: Uint8Array, offset: number): Promise<void> {
  for (const e of await child.map(offset, target.length)) {
    const part = target.subarray(e.offset - offset, e.offset - offset + e.length);
    if (e.state === 'data') await child.read(part, e.offset);
    else if (e.state === 'zero') part.fill(0);
    else await readParent(part, e.offset);
  }
}

/** The whole chain's bytes: layers[0] the leaf, the last the base; transparent at the base reads zeros. */
export async function composeChain(layers: VirtualDisk[], target: Uint8Array, offset: number): Promise<void> {
  const [top, ...rest] = layers;
  if (!top) {
    target.fill(0);
    return;
  }
  await composeRead(top, (t, o) => composeChain(rest, t, o), target, offset);
}

export async function chainSha256(layers: VirtualDisk[], chunk = 4 * MIB): Promise<string> {
  const h = createHash('sha256');
  const size = layers[0]!.virtualSize;
  const buf = new Uint8Array(chunk);
  for (let off = 0; off < size; off += chunk) {
    const part = buf.subarray(0, Math.min(chunk, size - off));
    await composeChain(layers, part, off);
    h.update(part);
  }
  return h.digest('hex');
}

export async function readAll(disk: VirtualDisk): Promise<Uint8Array> {
  const out = new Uint8Array(disk.virtualSize);
  for (let off = 0; off < out.length; off += 8 * MIB) await disk.read(out.subarray(off, Math.min(out.length, off + 8 * MIB)), off);
  return out;
}

export function errors(findings: Finding[]): Finding[] {
  return findings.filter((f) => f.severity === 'error');
}

export function describeFindings(findings: Finding[]): string {
  return findings.map((f) => `${f.severity} ${f.code}: ${f.message}`).join('\n');
}

/** Index of the first differing byte, or -1. */
export function firstDifference(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

export function assertBytesEqual(actual: Uint8Array, expected: Uint8Array, what: string): void {
  const d = firstDifference(actual, expected);
  if (d >= 0) assert.fail(`${what}: first difference at byte ${d} (got ${actual[d]}, expected ${expected[d]}; lengths ${actual.length}/${expected.length})`);
}
