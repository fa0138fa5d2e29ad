// A recovery plan's step (the arguments of the diskchain command `scan` prints) as the library call the
// command makes. Only the three commands a plan contains are accepted, and every path is confined.
import { basename, dirname } from 'node:path';
import { convert, DiskchainError, merge, reparent, type FormatName } from '../api/index.js';
import type { JobContext } from './jobs.js';
import type { Roots } from './roots.js';

export interface StepCall {
  kind: 'merge' | 'reparent' | 'convert';
  title: string;
  /** Paths the step writes. */
  locks: string[];
  run: (ctx: JobContext) => Promise<unknown>;
}

interface ParsedStep {
  command: string;
  positional: string[];
  searchPaths: string[];
  format: string | null;
}

function parse(args: string[]): ParsedStep {
  const [command, ...rest] = args;
  const parsed: ParsedStep = { command: command ?? '', positional: [], searchPaths: [], format: null };
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i]!;
    if (a === '--search-path' && rest[i + 1] !== undefined) parsed.searchPaths.push(rest[++i]!);
    else if (a === '-O' && rest[i + 1] !== undefined) parsed.format = rest[++i]!;
    else if (a.startsWith('-')) throw new DiskchainError('UNSUPPORTED', `the console does not run plan steps with ${a}`);
    else parsed.positional.push(a);
  }
  return parsed;
}

export async function planStepCall(args: string[], roots: Roots): Promise<StepCall> {
  const step = parse(args);
  const searchPaths = await Promise.all(step.searchPaths.map((p) => roots.existing(p)));
  const withSearch = searchPaths.length > 0 ? { searchPaths } : {};
  const [first, second] = step.positional;
  if (step.command === 'merge' && step.positional.length === 1) {
    const child = await roots.existing(first);
    return {
      kind: 'merge',
      title: `Merge ${basename(child)} into its parent`,
      locks: [dirname(child)],
      run: ({ signal, onProgress, onPhase }) => merge(child, { ...withSearch, signal, onProgress, onPhase }),
    };
  }
  if (step.command === 'reparent' && step.positional.length === 2) {
    const child = await roots.existing(first);
    const parent = await roots.existing(second);
    return {
      kind: 'reparent',
      title: `Point ${basename(child)} at ${basename(parent)}`,
      locks: [child, parent],
      run: () => reparent(child, parent, withSearch),
    };
  }
  if (step.command === 'convert' && step.positional.length === 2 && (step.format === 'vhdx' || step.format === 'vhd' || step.format === 'raw')) {
    const source = await roots.existing(first);
    const target = await roots.fresh(second);
    const format: FormatName = step.format;
    return {
      kind: 'convert',
      title: `Write ${basename(source)} into the standalone ${basename(target)}`,
      locks: [target],
      run: ({ signal, onProgress }) => convert(source, target, { format, ...withSearch, signal, onProgress }),
    };
  }
  throw new DiskchainError('UNSUPPORTED', `the console does not run the plan step "${args.join(' ')}"`);
}
