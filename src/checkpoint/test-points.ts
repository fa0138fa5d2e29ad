/**
 * Step boundaries of the VM transactions, for the crash tests: with DISKCHAIN_TEST_CRASH_AFTER=N the
 * process kills itself (SIGKILL, as kill -9) at the Nth boundary it reaches; with
 * DISKCHAIN_TEST_CRASH_AT=<label> at the first boundary of that label. DISKCHAIN_TEST_POINTS=<file>
 * appends each boundary's number and label to the file. DISKCHAIN_TEST_FAIL_AT=<label>[#k] makes the
 * k-th boundary of that label (default the first) throw an IO error instead, as a failing disk would
 * (the failure tests of group operations). Nothing happens when none is set.
 */
import { appendFileSync, existsSync, writeFileSync } from 'node:fs';
import { DiskchainError } from '../io/errors.js';

let reached = 0;
const seen = new Map<string, number>();

export function testPoint(label: string): void {
  const after = process.env.DISKCHAIN_TEST_CRASH_AFTER;
  const at = process.env.DISKCHAIN_TEST_CRASH_AT;
  const log = process.env.DISKCHAIN_TEST_POINTS;
  const fail = process.env.DISKCHAIN_TEST_FAIL_AT;
  if (!after && !at && !log && !fail) return;
  reached++;
  if (log) appendFileSync(log, `${reached} ${label}\n`);
  if ((after && reached === Number(after)) || (at && label === at)) process.kill(process.pid, 'SIGKILL');
  if (fail) {
    const [failLabel, nth] = fail.split('#');
    if (label !== failLabel) return;
    const count = (seen.get(label) ?? 0) + 1;
    seen.set(label, count);
    if (count === Number(nth ?? 1)) throw new DiskchainError('IO', `injected failure at ${label} (DISKCHAIN_TEST_FAIL_AT)`);
  }
}

/** Forgets the failure counts (a test that injects failures in several runs of one process). */
export function resetTestPoints(): void {
  seen.clear();
}

let held = false;

/**
 * With DISKCHAIN_TEST_HOLD_AT=<label> and DISKCHAIN_TEST_HOLD_FILE=<file>: the first time the
 * boundary is reached, the file is created and the operation waits until the test deletes it (a
 * cancel sent meanwhile lands at a known point). Nothing happens when they are not set.
 */
export async function testHold(label: string): Promise<void> {
  const at = process.env.DISKCHAIN_TEST_HOLD_AT;
  const file = process.env.DISKCHAIN_TEST_HOLD_FILE;
  if (!at || !file || at !== label || held) return;
  held = true;
  writeFileSync(file, `${label}\n`);
  while (existsSync(file)) await new Promise((resolve) => setTimeout(resolve, 20));
}
