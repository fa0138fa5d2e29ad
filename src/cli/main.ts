#!/usr/bin/env node
import { Command, CommanderError } from 'commander';
import { registerChainCommands } from './commands-chain.js';
import { registerConsoleCommands } from './commands-console.js';
import { registerDataCommands } from './commands-data.js';
import { registerDiskCommands } from './commands-disk.js';
import { registerMergeCommands } from './commands-merge.js';
import { registerScanCommands } from './commands-scan.js';
import { registerVmCommands } from './commands-vm.js';
import { registerCheckpointCommands } from './commands-checkpoint.js';
import { registerServeCommands } from './commands-serve.js';
import { setFileWriteMode } from '../api/index.js';
import { setLockCommand } from '../io/lock.js';
import { EXIT, EXIT_CODES_HELP, reportError } from './output.js';

// The CLI owns its process: nothing else waits on the event loop while a write runs (see FileWriteMode).
setFileWriteMode('calling-thread');
// What a process refused by this one's locks is told this one is doing (docs/locking.md).
setLockCommand(['diskchain', ...process.argv.slice(2)].join(' '));

const program = new Command();
program
  .name('diskchain')
  .description('Inspect, check, convert, merge, reparent, scan and recover VHDX/VHD disks and their differencing chains (Hyper-V checkpoints) on Linux.\nCommands that only read open files read-only.')
  .version('0.1.0')
  .addHelpText('after', EXIT_CODES_HELP)
  .exitOverride()
  .showHelpAfterError();

async function run(action: () => Promise<number>, json: boolean): Promise<void> {
  try {
    process.exitCode = await action();
  } catch (e) {
    process.exitCode = reportError(e, json);
  }
}

registerDiskCommands(program, run);
registerDataCommands(program, run);
registerChainCommands(program, run);
registerMergeCommands(program, run);
registerScanCommands(program, run);
registerVmCommands(program, run);
registerCheckpointCommands(program, run);
registerConsoleCommands(program, run);
registerServeCommands(program, run);

// No top-level await: the bin is bundled as CommonJS, which starts faster than an ES module.
program.parseAsync(process.argv).catch((e: unknown) => {
  if (e instanceof CommanderError) {
    process.exitCode = e.exitCode === 0 ? EXIT.ok : EXIT.usage;
  } else {
    process.exitCode = reportError(e, false);
  }
});
