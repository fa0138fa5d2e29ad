import type { Command } from 'commander';
import { withChain } from '../chain/open-chain.js';
import { measureChain } from '../ops/measure.js';
import { merge } from '../ops/merge.js';
import { rebase } from '../ops/rebase.js';
import { reparent } from '../ops/reparent.js';
import { EXIT, interruptSignal, printJson, progressBar, say, type Run } from './output.js';
import { sourceFormat, sourceFormatOption } from './formats.js';
import { SEARCH_PATH_OPTION, searchPathOptions } from './search-path.js';
import { formatBytes } from './sizes.js';
export function registerMergeCommands(program: Command, run: Run): void {
  program
    .command('merge')
    .description('merge a differencing disk (and every layer between) into an ancestor, as Merge-VHD does; resumable: after a crash, run the same command again')
    .argument('<child>')
    .option('--into <ancestor>', 'the ancestor to merge into (default: the parent)')
    .option('--keep', 'keep the merged files (default: remove them once the merge is durable)')
    .option('--verify', 'hash the content before and after and report whether it is the same')
    .option(...SEARCH_PATH_OPTION)
    .option('--json', 'print JSON')
    .action((child: string, opts: { into?: string; keep?: boolean; verify?: boolean; searchPath?: string[]; json?: boolean }) =>
      run(async () => {
        const bar = progressBar('merge');
        try {
          const result = await merge(child, {
            ...(opts.into ? { into: opts.into } : {}),
            keep: opts.keep ?? false,
            verify: opts.verify ?? false,
            ...(await searchPathOptions(opts)),
            signal: interruptSignal(),
            onProgress: bar.onProgress,
          });
          bar.stop();
          if (opts.json) printJson(result);
          else {
            const lines = [
              `${result.resumed ? 'resumed and finished' : 'merged'}: ${result.merged.join(', ')} -> ${result.target}`,
              `copied ${formatBytes(result.bytesCopied)}${result.forecast ? ` (forecast ${formatBytes(result.forecast.bytesNeeded)} of growth, ${formatBytes(result.forecast.freeBytes)} free)` : ''}`,
              ...(result.handedOver.length ? [`re-pointed at ${result.target}: ${result.handedOver.join(', ')}`] : []),
              result.removed.length ? `removed: ${result.removed.join(', ')}` : 'kept the merged files',
              ...(result.verify ? [`verify: ${result.verify.identical ? 'identical' : 'DIFFERENT'} (sha256 before ${result.verify.before}, after ${result.verify.after})`] : []),
              `the merged content is now in ${result.target}`,
            ];
            say(lines.join('\n'));
          }
          return result.verify && !result.verify.identical ? EXIT.findings : EXIT.ok;
        } finally {
          bar.stop();
        }
      }, opts.json ?? false),
    );

  program
    .command('reparent')
    .description('point a differencing disk at another parent file, as Set-VHD -ParentPath does (rewrites the parent locator; with --ignore-id-mismatch also the recorded identity)')
    .argument('<child>')
    .argument('<new-parent>')
    .option('--ignore-id-mismatch', 'accept a parent whose identity differs from what the child recorded, and record the new one')
    .option(...SEARCH_PATH_OPTION)
    .option('--json', 'print JSON')
    .action((child: string, parent: string, opts: { ignoreIdMismatch?: boolean; searchPath?: string[]; json?: boolean }) =>
      run(async () => {
        const result = await reparent(child, parent, { ignoreIdMismatch: opts.ignoreIdMismatch ?? false, ...(await searchPathOptions(opts)) });
        if (opts.json) printJson(result);
        else say(`${child} now names ${parent} as its parent${result.identityMatched ? '' : ' (identity mismatch accepted and recorded)'}`);
        return EXIT.ok;
      }, opts.json ?? false),
    );

  program
    .command('rebase')
    .description('copy into a differencing disk what it reads from the layers it leaves behind, so it depends on a nearer ancestor (--onto) or on nothing (--standalone)')
    .argument('<child>')
    .option('--onto <ancestor>', 'the ancestor the child will depend on directly')
    .option('--standalone', 'make the child a standalone dynamic disk')
    .option(...SEARCH_PATH_OPTION)
    .option('--json', 'print JSON')
    .action((child: string, opts: { onto?: string; standalone?: boolean; searchPath?: string[]; json?: boolean }) =>
      run(async () => {
        const bar = progressBar('rebase');
        try {
          const result = await rebase(child, {
            ...(opts.onto ? { onto: opts.onto } : {}),
            standalone: opts.standalone ?? false,
            ...(await searchPathOptions(opts)),
            signal: interruptSignal(),
            onProgress: bar.onProgress,
          });
          bar.stop();
          if (opts.json) printJson(result);
          else say(`${child} ${result.parent ? `now depends on ${result.parent}` : 'is now standalone'}; copied ${formatBytes(result.bytesCopied)} from ${result.leftBehind.join(', ') || 'no layer'}`);
          return EXIT.ok;
        } finally {
          bar.stop();
        }
      }, opts.json ?? false),
    );

  program
    .command('measure')
    .description('the space a merge, rebase or convert of this disk needs, against the free space (read-only)')
    .argument('<disk>')
    .addOption(sourceFormatOption())
    .option(...SEARCH_PATH_OPTION)
    .option('--json', 'print JSON')
    .action((disk: string, opts: { sourceFormat?: string; searchPath?: string[]; json?: boolean }) =>
      run(async () =>
        withChain(disk, { ...sourceFormat(opts), ...(await searchPathOptions(opts)) }, async (chain) => {
          const m = await measureChain(chain);
          if (opts.json) printJson(m);
          else {
            const mergeLine = (label: string, x: typeof m.mergeIntoParent): string =>
              x ? `${label} (${x.target}): ${formatBytes(x.bytesToCopy)} to copy, file grows by up to ${formatBytes(x.bytesNeeded)}; ${formatBytes(x.freeBytes)} free${x.fits ? '' : ' - DOES NOT FIT'}` : `${label}: no parent`;
            process.stdout.write(
              [
                `${disk}: ${formatBytes(m.virtualSize)} virtual, ${formatBytes(m.dataBytes)} of data through ${m.layers.length} layer(s)`,
                mergeLine('merge into parent', m.mergeIntoParent),
                mergeLine('merge into base', m.mergeIntoBase),
                `convert / rebase --standalone: up to ${formatBytes(m.convert.vhdx)} as VHDX, ${formatBytes(m.convert.vhd)} as VHD, ${formatBytes(m.convert.raw)} allocated as raw`,
              ].join('\n') + '\n',
            );
          }
          return EXIT.ok;
        }), opts.json ?? false),
    );
}
