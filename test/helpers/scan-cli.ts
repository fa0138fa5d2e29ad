/**
 * A stand-in for src/cli/main.ts with only `scan` registered, used by test/scan.test.ts while
 * main.ts does not register the scan commands yet. Same run/exit-code handling as main.ts.
 */
import { Command, CommanderError } from 'commander';
import { registerScanCommands } from '../../src/cli/commands-scan.js';
import { EXIT, reportError } from '../../src/cli/output.js';

const program = new Command().name('diskchain').exitOverride();

async function run(action: () => Promise<number>, json: boolean): Promise<void> {
  try {
    process.exitCode = await action();
  } catch (e) {
    process.exitCode = reportError(e, json);
  }
}

registerScanCommands(program, run);
try {
  await program.parseAsync(process.argv);
} catch (e) {
  process.exitCode = e instanceof CommanderError ? (e.exitCode === 0 ? EXIT.ok : EXIT.usage) : reportError(e, false);
}
