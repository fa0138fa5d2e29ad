/**
 * Step boundaries of the VM transactions, for the crash tests: with DISKCHAIN_TEST_CRASH_AFTER=N the
 * process kills itself (SIGKILL, as kill -9) at the Nth boundary it reaches; with
 * DISKCHAIN_TEST_CRASH_AT=<label> at the first boundary of that label. DISKCHAIN_TEST_POINTS=<file>
 * appends each boundary's number and label to the file. Nothing happens when none is set.
 */
import { appendFileSync } from 'node:fs';

let reached = 0;

export function testPoint(label: string): void {
  const after = process.env.DISKCHAIN_TEST_CRASH_AFTER;
  const at = process.env.DISKCHAIN_TEST_CRASH_AT;
  const log = process.env.DISKCHAIN_TEST_POINTS;
  if (!after && !at && !log) return;
  reached++;
  if (log) appendFileSync(log, `${reached} ${label}\n`);
  if ((after && reached === Number(after)) || (at && label === at)) process.kill(process.pid, 'SIGKILL');
}
