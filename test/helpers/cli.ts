import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** The diskchain CLI as shipped: `node dist/bin/diskchain.js ...` (the bundle). */
export const CLI = new URL('../../bin/diskchain.js', import.meta.url).pathname;

/**
 * The state folder of this test process. The CLI remembers parent links in $XDG_STATE_HOME/diskchain
 * (src/chain/link-store.ts, ~/.local/state without it); a test must neither add to the user's store
 * nor be helped by links another run left there. Importing this module (every test that runs the CLI
 * gets CLI from here) points XDG_STATE_HOME at a private temporary folder in process.env, so every
 * process the test spawns inherits it, also through `{ ...process.env, ... }`; it goes at exit.
 */
export const TEST_STATE_HOME = privateStateHome();

function privateStateHome(): string {
  const state = mkdtempSync(join(tmpdir(), 'diskchain-state-'));
  process.env.XDG_STATE_HOME = state;
  process.on('exit', () => rmSync(state, { recursive: true, force: true }));
  return state;
}
