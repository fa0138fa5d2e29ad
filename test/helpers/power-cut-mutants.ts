/**
 * Mutants for the power-cut model: flush filters that drop the flushes issued by one call of the
 * product (named by its function or method and by its place among the matching calls there), found in
 * the compiled module, so an edit elsewhere in the file does not move the target.
 */
import { readFileSync } from 'node:fs';
import type { FlushFilter } from './power-cut-recorder.js';

/**
 * Drops the flushes issued by the `nth` (0-based) `.flush()` call in the body of `method` in the
 * compiled module `moduleUrl`: the frame `method (module:line:` is on the flush's stack.
 */
export function dropFlushCall(moduleUrl: URL, method: string, nth: number): FlushFilter {
  return dropFlushesUnder(moduleUrl, method, /\.flush\(\)/, nth);
}

/**
 * Drops every flush issued under the `nth` (0-based) line matching `call` in the body of `fn` (a
 * method, or a top-level function) in the compiled module `moduleUrl`: a call that flushes on the way
 * (a disk's close()) behaves as if it no longer did.
 */
export function dropFlushesUnder(moduleUrl: URL, fn: string, call: RegExp, nth: number): FlushFilter {
  const lines = readFileSync(moduleUrl, 'utf8').split('\n');
  const start = lines.findIndex((l) => new RegExp(`^\\s*(export )?(async )?(function )?${fn}\\(`).test(l));
  if (start < 0) throw new Error(`no function or method ${fn} in ${moduleUrl.pathname}`);
  const indent = /^\s*/.exec(lines[start]!)![0];
  const calls: number[] = [];
  for (let i = start + 1; i < lines.length && !lines[i]!.startsWith(`${indent}}`); i++) if (call.test(lines[i]!)) calls.push(i + 1);
  const line = calls[nth];
  if (line === undefined) throw new Error(`${fn} in ${moduleUrl.pathname} has ${calls.length} calls matching ${call}, not ${nth + 1}`);
  const frame = new RegExp(`[\\s.]${fn} \\(${moduleUrl.href.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:${line}:`);
  return ({ stack }) => frame.test(stack);
}
