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
import { defaultLinkStorePath, setFileWriteMode, useLinkStore } from '../api/index.js';
import { EXIT, EXIT_CODES_HELP, reportError, setQuiet } from './output.js';

// The CLI owns its process: nothing else waits on the event loop while a write runs (see FileWriteMode).
setFileWriteMode('calling-thread');

// Parent links across folders that diskchain made or the user confirmed are remembered (docs/chains.md).
useLinkStore(defaultLinkStorePath());

// A reader that stops early (`diskchain read disk | head -c 10`) closes the pipe: stop quietly with the
// exit code a process killed by SIGPIPE has. Output is printed after a change is complete, so nothing is
// left half done (read only reads). The long-running servers (serve, console, a VM's worker) keep
// running instead: their clients, not their output, decide when they stop.
const SERVERS = new Set(['serve', 'console', 'vm start', 'vm worker']);
let server = false;
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (e: NodeJS.ErrnoException) => {
    if (server) return;
    if (e.code === 'EPIPE') process.exit(EXIT.closedPipe);
    throw e;
  });
}

const program = new Command();
program
  .name('diskchain')
  .description('Inspect, check, convert, merge, reparent, scan and recover VHDX/VHD disks and their differencing chains (Hyper-V checkpoints) on Linux.\nCommands that only read open files read-only.')
  .version('0.1.0')
  .option('-q, --quiet', 'print no progress and no confirmation lines (errors, --json and requested data still print)')
  .addHelpText('after', EXIT_CODES_HELP)
  .exitOverride()
  // A usage error is one line too, in the form of every other error (commander's "error: ..." reworded).
  .configureOutput({ outputError: (text, write) => write(`diskchain: ${text.trim().replace(/^error: /, '').replace(/\n+/g, ' ')} (--help lists the commands and options)\n`) });

program.hook('preAction', (_program, command) => {
  setQuiet(program.opts<{ quiet?: boolean }>().quiet ?? false);
  const parent = command.parent && command.parent !== program ? `${command.parent.name()} ` : '';
  server = SERVERS.has(parent + command.name());
});

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
