/**
 * Runs one merge in its own process so a test can SIGKILL it: argv = child path, ancestor path,
 * checkpoint bytes. Prints "phase <name>" and "progress <bytes>" lines as it goes, "done" at the end.
 */
import { merge } from '../../src/ops/merge.js';

const [child, into, checkpoint] = process.argv.slice(2);
try {
  await merge(child!, {
    into: into!,
    checkpointBytes: Number(checkpoint),
    onPhase: (p) => process.stdout.write(`phase ${p}\n`),
    onProgress: (done) => process.stdout.write(`progress ${done}\n`),
  });
  process.stdout.write('done\n');
} catch (e) {
  process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
  process.exitCode = 1;
}
