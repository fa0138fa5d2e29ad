import assert from 'node:assert/strict';
import { isDiskchainError } from '../../src/io/errors.js';

/** Expects `p` to reject with a DiskchainError of `code` whose message matches `pattern`. */
export async function rejectsWith(p: Promise<unknown>, code: string, pattern: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(isDiskchainError(e), `a DiskchainError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    assert.match(e.message, pattern);
    return true;
  });
}
