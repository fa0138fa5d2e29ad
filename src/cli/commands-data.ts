import { createReadStream } from 'node:fs';
import type { Command } from 'commander';
import { convert } from '../api/convert.js';
import { openChain, withChain } from '../chain/open-chain.js';
import { refuseIfDependedOn } from '../ops/dependents.js';
import { IGNORE_ID_OPTION, parentSearch, SEARCH_PATH_OPTION, searchPathOptions } from './search-path.js';
import { DiskchainError } from '../io/errors.js';
import { parseFormat, refuseIgnored, sourceFormat, sourceFormatOption, targetFormat } from './formats.js';
import { EXIT, interruptSignal, printJson, progressBar, say, type Run } from './output.js';
import { formatBytes, parseSize } from './sizes.js';
import { FORCE_SHARE_OPTION, forceShareOptions } from './force-share.js';
import { readToFile, readToStdout } from './read-to-file.js';

const CHUNK = 4 * 1024 * 1024;

export function registerDataCommands(program: Command, run: Run): void {
  program
    .command('convert')
    .description('read a disk through its whole chain and write one standalone image (holes stay holes); written as <target>.diskchain-partial and renamed when complete')
    .argument('<source>')
    .argument('<target>', 'must not exist; its extension (.vhdx .avhdx .vhd .avhd .raw .img) sets the format unless -O does')
    .option('-O, --output-format <format>', 'vhdx, vhd or raw (default: the target\'s extension\'s, else vhdx)')
    .option('--type <type>', 'fixed or dynamic (VHDX and VHD; default dynamic)')
    .option('--block-size <size>', 'payload block size of the target (VHDX and VHD)')
    .addOption(sourceFormatOption('the source'))
    .option('--json', 'print JSON')
    .option(...SEARCH_PATH_OPTION)
    .action((source: string, target: string, opts: { outputFormat?: string; type?: string; blockSize?: string; sourceFormat?: string; json?: boolean; searchPath?: string[] }) =>
      run(async () => {
        const format = targetFormat(target, opts.outputFormat, '--output-format', 'vhdx');
        if (format === 'raw') refuseIgnored([[opts.type, '--type'], [opts.blockSize, '--block-size']], 'to a raw image');
        if (opts.type !== undefined && opts.type !== 'fixed' && opts.type !== 'dynamic') throw new DiskchainError('INVALID_ARGUMENT', `--type must be fixed or dynamic, not ${opts.type}`);
        const bar = progressBar('convert');
        try {
          const result = await convert(source, target, {
            format,
            ...(opts.type ? { diskType: opts.type as 'fixed' | 'dynamic' } : {}),
            ...(opts.blockSize ? { blockSize: parseSize(opts.blockSize, 'block size') } : {}),
            ...(opts.sourceFormat ? { sourceFormat: parseFormat(opts.sourceFormat, '--source-format') } : {}),
            ...(await parentSearch(opts)),
            onProgress: bar.onProgress,
            signal: interruptSignal(),
          });
          bar.stop();
          if (opts.json) printJson({ source, target, format, ...result });
          else say(`converted ${source} -> ${target}: ${formatBytes(result.bytesWritten)} written, ${formatBytes(result.bytesSkipped)} skipped as holes`);
        } finally {
          bar.stop();
        }
        return EXIT.ok;
      }, opts.json ?? false),
    );

  program
    .command('read')
    .description('copy raw bytes of the virtual disk (through its chain) to stdout or a file (-o: written as <file>.diskchain-partial and renamed when complete)')
    .argument('<disk>')
    .option('--offset <n>', 'first byte', '0')
    .option('--length <n>', 'bytes to read (default: to the end)')
    .option('-o, --output <file>', 'write here instead of stdout (replaced only once the read is complete)')
    .addOption(sourceFormatOption())
    .option(...SEARCH_PATH_OPTION)
    .option(...IGNORE_ID_OPTION)
    .option(...FORCE_SHARE_OPTION)
    .action((disk: string, opts: { offset: string; length?: string; output?: string; sourceFormat?: string; searchPath?: string[]; ignoreIdMismatch?: boolean; forceShare?: boolean }) =>
      run(async () => {
        const offset = parseSize(opts.offset, 'offset');
        const length = opts.length !== undefined ? parseSize(opts.length, 'length') : undefined;
        return withChain(disk, { ...sourceFormat(opts), ...(await searchPathOptions(opts)), ...forceShareOptions(opts) }, async (chain) => {
          const size = chain.virtualSize;
          if (offset > size) throw new DiskchainError('OUT_OF_RANGE', `--offset ${offset} is beyond the end of the virtual disk (${size} bytes)`, { file: disk });
          const count = length ?? size - offset;
          if (offset + count > size) throw new DiskchainError('OUT_OF_RANGE', `--offset ${offset} --length ${count} runs past the end of the virtual disk (${size} bytes; at most ${size - offset} from that offset)`, { file: disk });
          if (opts.output) {
            const bar = progressBar('read');
            try {
              await readToFile(chain, offset, count, opts.output, { signal: interruptSignal(), onProgress: bar.onProgress });
            } finally {
              bar.stop();
            }
          } else await readToStdout(chain, offset, count);
          return EXIT.ok;
        });
      }, false),
    );

  program
    .command('write')
    .description('write bytes into the virtual disk at an offset (the top layer takes the writes)')
    .argument('<disk>')
    .requiredOption('--offset <n>', 'first byte to write')
    .option('--input <file>', 'read the bytes from this file, or - for stdin', '-')
    .addOption(sourceFormatOption())
    .option(...SEARCH_PATH_OPTION)
    .option('--json', 'print JSON')
    .option('--ignore-dependents', 'write even though other disks in the same folder depend on this one (their content would change under them)')
    .action((disk: string, opts: { offset: string; input: string; sourceFormat?: string; searchPath?: string[]; json?: boolean; ignoreDependents?: boolean }) =>
      run(async () => {
        const offset = parseSize(opts.offset, 'offset');
        if (!opts.ignoreDependents) await refuseIfDependedOn(disk);
        const chain = await openChain(disk, { writable: true, ...sourceFormat(opts), ...(await parentSearch(opts)) });
        let written = 0;
        try {
          // A file is read a whole chunk at a time (the 64 KiB default costs a thread-pool round trip per piece).
          const input = opts.input === '-' ? process.stdin : createReadStream(opts.input, { highWaterMark: CHUNK });
          // Pieces are gathered and joined once per chunk.
          let pieces: Buffer[] = [];
          let pendingBytes = 0;
          const writeOut = async (): Promise<void> => {
            const bytes = Buffer.concat(pieces, pendingBytes);
            pieces = [];
            pendingBytes = 0;
            await chain.write(bytes, offset + written);
            written += bytes.length;
          };
          for await (const piece of input as AsyncIterable<Buffer>) {
            pieces.push(piece);
            pendingBytes += piece.length;
            if (pendingBytes >= CHUNK) await writeOut();
          }
          if (pendingBytes > 0) await writeOut();
          await chain.flush();
        } finally {
          await chain.close();
        }
        if (opts.json) printJson({ disk, offset, bytesWritten: written });
        else say(`wrote ${written} bytes at offset ${offset} into ${disk}`);
        return EXIT.ok;
      }, opts.json ?? false),
    );
}
