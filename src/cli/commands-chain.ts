import { Option, type Command } from 'commander';
import { withChain } from '../chain/open-chain.js';
import { compareChains } from '../ops/compare.js';
import { parseFormat, sourceFormat, sourceFormatOption } from './formats.js';
import { IGNORE_ID_OPTION, parentSearch, SEARCH_PATH_OPTION, searchPathOptions } from './search-path.js';
import { EXIT, interruptSignal, printJson, progressBar, say, type Run } from './output.js';
import { formatBytes } from './sizes.js';


export function registerChainCommands(program: Command, run: Run): void {
  program
    .command('chain')
    .description('list the chain from the leaf to the base: each layer and the state of its link (read-only)')
    .argument('<disk>')
    .addOption(sourceFormatOption())
    .option('--json', 'print JSON')
    .option(...SEARCH_PATH_OPTION)
    .option(...IGNORE_ID_OPTION)
    .action((disk: string, opts: { json?: boolean; sourceFormat?: string; searchPath?: string[]; ignoreIdMismatch?: boolean }) =>
      run(async () =>
        withChain(disk, { ...sourceFormat(opts), ...(await searchPathOptions(opts)) }, async (chain) => {
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
              const link = chain.links[l.depth - 1];
              const how = link && link.foundBy !== 'path' ? ` (found ${link.foundBy === 'remembered' ? 'through a remembered link' : 'by identity'})` : '';
              process.stdout.write(`${'  '.repeat(l.depth)}${l.depth === 0 ? '' : '└ '}${l.path}  ${l.format.toUpperCase()} ${l.diskType}, ${formatBytes(l.allocatedBytes)} allocated${how}\n`);
            }
          }
          return EXIT.ok;
        }), opts.json ?? false),
    );

  program
    .command('map')
    .description('which layer serves each range of the disk: data, zero or absent (read-only)')
    .argument('<disk>')
    .addOption(sourceFormatOption())
    .option('--json', 'print JSON')
    .option(...SEARCH_PATH_OPTION)
    .option(...IGNORE_ID_OPTION)
    .action((disk: string, opts: { json?: boolean; sourceFormat?: string; searchPath?: string[]; ignoreIdMismatch?: boolean }) =>
      run(async () =>
        withChain(disk, { ...sourceFormat(opts), ...(await searchPathOptions(opts)) }, async (chain) => {
          const withPaths = (await chain.mapAll()).map((e) => ({ ...e, file: e.layer !== undefined ? chain.layers[e.layer]!.path : null }));
          if (opts.json) printJson({ extents: withPaths });
          else {
            const row = (offset: string, length: string, state: string, file: string): string => `${offset.padStart(16)} ${length.padStart(16)}  ${state.padEnd(6)} ${file}\n`;
            process.stdout.write(row('offset', 'length', 'state', 'layer'));
            for (const e of withPaths) process.stdout.write(row(String(e.offset), String(e.length), e.state, e.file ?? ''));
          }
          return EXIT.ok;
        }), opts.json ?? false),
    );

  program
    .command('compare')
    .description('do two disks (read through their chains) hold the same content? exit 0 if so, 1 if not')
    .argument('<a>')
    .argument('<b>')
    .addOption(sourceFormatOption('<a>'))
    .addOption(new Option('-F, --second-format <format>', 'the format of <b>: vhdx, vhd or raw (as qemu-img compare -F)').choices(['vhdx', 'vhd', 'raw']))
    .option(...SEARCH_PATH_OPTION)
    .option('--json', 'print JSON')
    .action((a: string, b: string, opts: { json?: boolean; sourceFormat?: string; secondFormat?: string; searchPath?: string[] }) =>
      run(async () => {
        const search = await parentSearch(opts);
        return withChain(a, { ...sourceFormat(opts), ...search }, (ca) =>
          withChain(b, { ...(opts.secondFormat ? { format: parseFormat(opts.secondFormat, '--second-format') } : {}), ...search }, async (cb) => {
            const bar = progressBar('compare');
            try {
              const result = await compareChains(ca, cb, { signal: interruptSignal(), onProgress: bar.onProgress });
              bar.stop();
              if (opts.json) printJson({ a, b, ...result });
              else say(result.identical ? 'identical' : `differ: first difference at byte ${result.firstDifference}${result.sizeA !== result.sizeB ? ` (sizes ${result.sizeA} and ${result.sizeB})` : ''}`);
              return result.identical ? EXIT.ok : EXIT.findings;
            } finally {
              bar.stop();
            }
          }),
        );
      }, opts.json ?? false),
    );
}
