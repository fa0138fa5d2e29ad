/**
 * `<vm>/run/worker.json`: what the worker that owns a running VM says about itself, rewritten
 * (atomically) at every change of state. Never needed after a crash: it is how `vm status` tells a
 * live worker from a dead one (its pid gone while the record says Running: the worker died) and how
 * a stale run/ is recognised and reported. The worker's control socket gives the live answer; this
 * record is what remains when nobody answers.
 */
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import * as v from 'valibot';
import { writeFileAtomic } from '../io/durable.js';
import { RUN_DIR } from '../checkpoint/folder.js';

/** Hyper-V's states of a VM, as `vm status` reports them. */
export const VM_STATES = ['Off', 'Starting', 'Running', 'Paused', 'Paused-Critical', 'Saving', 'Saved', 'Stopping'] as const;
export type VmState = (typeof VM_STATES)[number];

const RunRecordSchema = v.strictObject({
  kind: v.literal('diskchain.worker'),
  version: v.literal(1),
  pid: v.pipe(v.number(), v.safeInteger()),
  qemuPid: v.nullable(v.pipe(v.number(), v.safeInteger())),
  started: v.string(),
  updated: v.string(),
  state: v.picklist(VM_STATES),
  /** Why the VM is in this state when it is not the usual way (QEMU died, no space, ...). */
  reason: v.nullable(v.string()),
  /** The automatic checkpoint taken at this start (config.automaticCheckpoints), removed at a clean shutdown. */
  automaticCheckpoint: v.optional(v.nullable(v.string())),
});
export type RunRecord = v.InferOutput<typeof RunRecordSchema>;

export const RUN_FILES = {
  record: 'worker.json',
  control: 'control.sock',
  nbd: 'nbd.sock',
  qmp: 'qmp.sock',
  agent: 'qga.sock',
  serial: 'serial.log',
  log: 'worker.log',
} as const;

export function runPath(realFolder: string, name: keyof typeof RUN_FILES): string {
  return join(realFolder, RUN_DIR, RUN_FILES[name]);
}

export async function writeRunRecord(realFolder: string, record: RunRecord): Promise<void> {
  await writeFileAtomic(runPath(realFolder, 'record'), `${JSON.stringify(record, null, 2)}\n`);
}

/** The record, or undefined when there is none or it cannot be read (a damaged run/ is only reported stale). */
export async function readRunRecord(realFolder: string): Promise<RunRecord | undefined> {
  const path = runPath(realFolder, 'record');
  try {
    if ((await stat(path)).size > 64 * 1024) return undefined;
    const parsed = v.safeParse(RunRecordSchema, JSON.parse(await readFile(path, 'utf8')));
    return parsed.success ? parsed.output : undefined;
  } catch {
    return undefined;
  }
}

/** Whether a process with this pid exists (signal 0 checks without sending anything). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
