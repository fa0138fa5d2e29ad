/**
 * The detached worker's entry point when diskchain is used as a library (api startVm):
 * `node worker-main.js <vm folder>`. The CLI runs the same worker through its hidden `vm worker`
 * command instead, since its bundle holds everything in one file. Never imported.
 */
import { runWorkerProcess } from './worker-process.js';

const folder = process.argv[2];
if (!folder) {
  process.stderr.write('usage: worker-main.js <vm folder>\n');
  process.exit(2);
}
runWorkerProcess(folder).then(
  () => process.exit(0),
  (e: unknown) => {
    process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  },
);
