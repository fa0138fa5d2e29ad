import { createReadStream, createWriteStream } from 'node:fs';
import type { Command } from 'commander';
import { convert } from '../api/convert.js';
import { openChain, withChain } from '../chain/open-chain.js';
import { refuseIfDependedOn } from '../ops/dependents.js';
import { IGNORE_ID_OPTION, SEARCH_PATH_OPTION, searchPathOptions } from './search-path.js';
import { DiskchainError } from '../io/errors.js';
import type { FormatName } from '../formats/types.js';
import { EXIT, interruptSignal, printJson, progressBar, type Run } from './output.js';
import { formatBytes, parseSize } from './sizes.js';
import { FORCE_SHARE_OPTION, forceShareOptions } from './force-share.js';

const CHUNK = 4 * 1024 * 1024;

export function registerDataCommands(program: Command, run: Run): void {
  program
    .command('convert')
    .description('read a disk through its whole chain and write one standalone image (holes stay holes)')
    .argument('<source>')
    .argument('<target>', 'must not exist')
    .option('-O, --output-format <format>', 'vhdx, vhd or raw', 'vhdx')
    .option('--type <type>', 'fixed or dynamic', 'dynamic')
    .option('--block-size <size>', 'payload block size of the target')
    .option('-f, --source-format <format>', 'the source format when it cannot be detected (raw)')
    .option('--json', 'print JSON')
    .option(...SEARCH_PATH_OPTION)
    .action((source: string, target: string, opts: { outputFormat: string; type: string; blockSize?: string; sourceFormat?: string; json?: boolean; searchPath?: string[] }) =>
      run(async () => {
        const format = formatOption(opts.outputFormat, '--output-format');
        if (opts.type !== 'fixed' && opts.type !== 'dynamic') throw new DiskchainError('INVALID_ARGUMENT', `--type must be fixed or dynamic, not ${opts.type}`);
        const bar = progressBar('convert');
        try {
          const result = await convert(source, target, {
            format,
            diskType: opts.type,
            ...(opts.blockSize ? { blockSize: parseSize(opts.blockSize, 'block size') } : {}),
            ...(opts.sourceFormat ? { sourceFormat: formatOption(opts.sourceFormat, '--source-format') } : {}),
            ...searchPathOptions(opts),
            onProgress: bar.onProgress,
            signal: interruptSignal(),
          });
          bar.stop();
          if (opts.json) printJson({ source, target, format, ...result });
          else process.stdout.write(`converted ${source} -> ${target}: ${formatBytes(result.bytesWritten)} written, ${formatBytes(result.bytesSkipped)} skipped as holes\n`);
        } finally {
          bar.stop();
        }
        return EXIT.ok;
      }, opts.json ?? false),
    );

  program
    .command('read')
    .description('copy raw bytes of the virtual disk (through its chain) to stdout or a file')
    .argument('<disk>')
    .option('--offset <n>', 'first byte', '0')
    .option('--length <n>', 'bytes to read (default: to the end)')
    .option('-o, --output <file>', 'write here instead of stdout')
    .option(...SEARCH_PATH_OPTION)
    .option(...IGNORE_ID_OPTION)
    .option(...FORCE_SHARE_OPTION)
    .action((disk: string, opts: { offset: string; length?: string; output?: string; searchPath?: string[]; ignoreIdMismatch?: boolean; forceShare?: boolean }) =>
      run(() =>
        withChain(disk, { ...searchPathOptions(opts), ...forceShareOptions(opts) }, async (chain) => {
          const offset = parseSize(opts.offset, 'offset');
          const length = opts.length !== undefined ? parseSize(opts.length, 'length') : chain.virtualSize - offset;
          if (offset + length > chain.virtualSize || length < 0) throw new DiskchainError('OUT_OF_RANGE', `range ${offset}+${length} is outside the virtual disk (${chain.virtualSize} bytes)`, { file: disk });
          const out: NodeJS.WritableStream = opts.output ? createWriteStream(opts.output) : process.stdout;
          for (let done = 0; done < length; ) {
            const buf = new Uint8Array(Math.min(CHUNK, length - done));
            await chain.read(buf, offset + done);
            if (!out.write(buf)) await new Promise((r) => out.once('drain', r));
            done += buf.length;
          }
          if (opts.output) await new Promise<void>((resolve) => out.end(resolve));
          return EXIT.ok;
        }), false),
    );

  program
    .command('write')
    .description('write bytes into the virtual disk at an offset (the top layer takes the writes)')
    .argument('<disk>')
    .requiredOption('--offset <n>', 'first byte to write')
    .option('--input <file>', 'read the bytes from this file, or - for stdin', '-')
    .option('--json', 'print JSON')
    .option('--ignore-dependents', 'write even though other disks in the same folder depend on this one (their content would change under them)')
    .action((disk: string, opts: { offset: string; input: string; json?: boolean; ignoreDependents?: boolean }) =>
      run(async () => {
        const offset = parseSize(opts.offset, 'offset');
        if (!opts.ignoreDependents) await refuseIfDependedOn(disk);
        const chain = await openChain(disk, { writable: true });
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
        else process.stdout.write(`wrote ${written} bytes at offset ${offset} into ${disk}\n`);
        return EXIT.ok;
      }, opts.json ?? false),
    );
}

function formatOption(value: string, flag: string): FormatName {
  if (value === 'vhdx' || value === 'vhd' || value === 'raw') return value;
  throw new DiskchainError('INVALID_ARGUMENT', `${flag} must be vhdx, vhd or raw, not ${value}`);
}
