/**
 * Runs one merge in its own process so a test can kill it on an event: argv = child path, ancestor
 * path, checkpoint bytes, and `killAt` (0: never). Every change the merge makes to a file reaches
 * src/io/file-events.ts before it is made; the runner numbers them and prints `event <n> <phase>
 * <kind>` for each, and at event `killAt` it SIGKILLs itself before that change happens, so a kill
 * means the same instant on a fast machine and a slow one. Prints "phase <name>" as phases start and
 * "done" at the end (a kill after the last event but before "done" leaves a finished merge).
 */
import { writeSync } from 'node:fs';
import { setFileEventListener } from '../../src/io/file-events.js';
import { merge } from '../../src/ops/merge.js';

const [child, into, checkpoint, killAtArg] = process.argv.slice(2);
const killAt = Number(killAtArg ?? 0);
let phase = 'plan';
let events = 0;
setFileEventListener((event) => {
  events++;
  writeSync(1, `event ${events} ${phase} ${event.kind}\n`);
  if (events === killAt) process.kill(process.pid, 'SIGKILL');
});
try {
  await merge(child!, {
    into: into!,
    checkpointBytes: Number(checkpoint),
    onPhase: (p) => {
      phase = p;
      writeSync(1, `phase ${p}\n`);
    },
  });
  writeSync(1, 'done\n');
} catch (e) {
  writeSync(2, `${e instanceof Error ? e.message : String(e)}\n`);
  process.exitCode = 1;
}
