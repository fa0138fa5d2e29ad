/**
 * Holds a lock in its own process: argv = path, mode, command. Prints "locked" (or "error <code>")
 * and keeps the lock until its standard input closes; tests kill it with SIGKILL to play a crash.
 */
import { lockFile, type LockMode } from '../../src/io/lock.js';

const [path, mode, command] = process.argv.slice(2);
try {
  const lock = await lockFile(path!, mode as LockMode, { command: command! });
  process.stdout.write('locked\n');
  process.stdin.resume();
  process.stdin.on('end', () => void lock.release().then(() => process.exit(0)));
} catch (e) {
  process.stdout.write(`error ${(e as { code?: string }).code ?? String(e)}\n`);
  process.exitCode = 1;
}
