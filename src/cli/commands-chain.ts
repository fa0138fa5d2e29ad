import type { Command } from 'commander';
import { withChain } from '../chain/open-chain.js';
import { compareChains } from '../ops/compare.js';
import { IGNORE_ID_OPTION, SEARCH_PATH_OPTION, searchPathOptions } from './search-path.js';
import { EXIT, interruptSignal, printJson, progressBar, type Run } from './output.js';
import { formatBytes } from './sizes.js';
import { FORCE_SHARE_OPTION, forceShareOptions } from './force-share.js';


export function registerChainCommands(program: Command, run: Run): void {
  program
    .command('chain')
    .description('list the chain from the leaf to the base: each layer and the state of its link (read-only)')
    .argument('<disk>')
    .option('--json', 'print JSON')
    .option(...SEARCH_PATH_OPTION)
    .option(...IGNORE_ID_OPTION)
    .option(...FORCE_SHARE_OPTION)
    .action((disk: string, opts: { json?: boolean; searchPath?: string[]; ignoreIdMismatch?: boolean; forceShare?: boolean }) =>
      run(() =>
        withChain(disk, { ...searchPathOptions(opts), ...forceShareOptions(opts) }, async (chain) => {
          const layers = [];
          for (const [i, layer] of chain.layers.entries()) {
            layers.push({
              depth: i,
              path: layer.path,
              format: layer.format,
              diskType: layer.diskType,
              virtualSize: layer.virtualSize,
              fileSize: await layer.fileSize(),
              allocatedBytes: await layer.allocatedBytes(),
              link: chain.links[i] ? { parent: chain.links[i]!.parentPath, identityMatches: chain.links[i]!.identityMatches, foundBy: chain.links[i]!.foundBy } : null,
            });
          }
          if (opts.json) printJson({ layers });
          else {
            for (const l of layers) {
              process.stdout.write(`${'  '.repeat(l.depth)}${l.depth === 0 ? '' : '└ '}${l.path}  ${l.format.toUpperCase()} ${l.diskType}, ${formatBytes(l.allocatedBytes)} allocated\n`);
            }
          }
          return EXIT.ok;
        }), opts.json ?? false),
    );

  program
    .command('map')
    .description('which layer serves each range of the disk: data, zero or absent (read-only)')
    .argument('<disk>')
    .option('--json', 'print JSON')
    .option(...SEARCH_PATH_OPTION)
    .option(...IGNORE_ID_OPTION)
    .option(...FORCE_SHARE_OPTION)
    .action((disk: string, opts: { json?: boolean; searchPath?: string[]; ignoreIdMismatch?: boolean; forceShare?: boolean }) =>
      run(() =>
        withChain(disk, { ...searchPathOptions(opts), ...forceShareOptions(opts) }, async (chain) => {
          const withPaths = (await chain.mapAll()).map((e) => ({ ...e, file: e.layer !== undefined ? chain.layers[e.layer]!.path : null }));
          if (opts.json) printJson({ extents: withPaths });
          else for (const e of withPaths) process.stdout.write(`${String(e.offset).padStart(16)} ${String(e.length).padStart(16)}  ${e.state.padEnd(6)} ${e.file ?? ''}\n`);
          return EXIT.ok;
        }), opts.json ?? false),
    );

  program
    .command('compare')
    .description('do two disks (read through their chains) hold the same content? exit 0 if so, 1 if not')
    .argument('<a>')
    .argument('<b>')
    .option('--json', 'print JSON')
    .option(...FORCE_SHARE_OPTION)
    .action((a: string, b: string, opts: { json?: boolean; forceShare?: boolean }) =>
      run(() => {
        const share = forceShareOptions(opts);
        return withChain(a, share, (ca) =>
          withChain(b, share, async (cb) => {
            const bar = progressBar('compare');
            try {
              const result = await compareChains(ca, cb, { signal: interruptSignal(), onProgress: bar.onProgress });
              bar.stop();
              if (opts.json) printJson({ a, b, ...result });
              else process.stdout.write(result.identical ? 'identical\n' : `differ: first difference at byte ${result.firstDifference}${result.sizeA !== result.sizeB ? ` (sizes ${result.sizeA} and ${result.sizeB})` : ''}\n`);
              return result.identical ? EXIT.ok : EXIT.findings;
            } finally {
              bar.stop();
            }
          }),
        );
      }, opts.json ?? false),
    );
}
