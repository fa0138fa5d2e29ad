/**
 * Mutants for the power-cut model: flush filters that drop one specific flush call of the product
 * (named by method and by its place among that method's flush calls), found in the compiled module,
 * so an edit elsewhere in the file does not move the target.
 */
import { readFileSync } from 'node:fs';
import type { FlushFilter } from './power-cut-recorder.js';

/**
 * Drops the flushes issued by the `nth` (0-based) `.flush()` call in the body of `method` in the
 * compiled module `moduleUrl`: the frame `method (module:line:` is on the flush's stack.
 */
export function dropFlushCall(moduleUrl: URL, method: string, nth: number): FlushFilter {
  const lines = readFileSync(moduleUrl, 'utf8').split('\n');
  const start = lines.findIndex((l) => new RegExp(`^\\s+(async )?${method}\\(`).test(l));
  if (start < 0) throw new Error(`no method ${method} in ${moduleUrl.pathname}`);
  const indent = /^\s*/.exec(lines[start]!)![0];
  const calls: number[] = [];
  for (let i = start + 1; i < lines.length && !lines[i]!.startsWith(`${indent}}`); i++) if (/\.flush\(\)/.test(lines[i]!)) calls.push(i + 1);
  const line = calls[nth];
  if (line === undefined) throw new Error(`${method} in ${moduleUrl.pathname} has ${calls.length} flush calls, not ${nth + 1}`);
  const frame = new RegExp(`\\.${method} \\(${moduleUrl.href.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:${line}:`);
  return ({ stack }) => frame.test(stack);
}
