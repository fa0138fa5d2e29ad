import type { Command } from 'commander';
import { checkDisk } from '../api/check.js';
import { createChild, createDisk } from '../api/create.js';
import { inspect, type DiskInfo, type ParentInfo } from '../api/info.js';
import { resize } from '../api/resize.js';
import { DiskchainError } from '../io/errors.js';
import { Option } from 'commander';
import { EXIT, interruptSignal, printJson, progressBar, say, type Run } from './output.js';
import { FORCE_SHARE_OPTION, forceShareOptions } from './force-share.js';
import { formatOfName, refuseIgnored, sourceFormat, sourceFormatOption, targetFormat } from './formats.js';
import { parentSearch, SEARCH_PATH_OPTION } from './search-path.js';
import { formatBytes, parseSize } from './sizes.js';


export function registerDiskCommands(program: Command, run: Run): void {
  program
    .command('resize')
    .description("Resize-VHD: grow a VHDX or VHD (new space reads as zeros), or shrink a VHDX when nothing allocated lies beyond the new end. Refused on a differencing disk, on a disk with differencing children, and on a VM's disk while checkpoints exist (remove them, or export one). A VM's current disk is resized under the VM's lock")
    .argument('<disk>')
    .requiredOption('--size <size>', 'the new virtual size (e.g. 20G)')
    .option('--json', 'print JSON')
    .action((disk: string, opts: { size: string; json?: boolean }) =>
      run(async () => {
        const r = await resize(disk, parseSize(opts.size, '--size'), { command: 'diskchain resize' });
        if (opts.json) printJson(r);
        else say(`resized ${r.path} from ${formatBytes(r.previousSize)} to ${formatBytes(r.size)}`);
        return EXIT.ok;
      }, opts.json ?? false),
    );

  program
    .command('info')
    .description('show what a disk file is: format, type, sizes, identity, parent and log state (read-only)')
    .argument('<disk>', 'a VHDX/AVHDX or VHD/AVHD file (found by content, not by name)')
    .addOption(sourceFormatOption())
    .addOption(new Option('--raw').hideHelp())
    .option(...SEARCH_PATH_OPTION)
    .option('--json', 'print JSON')
    .option(...FORCE_SHARE_OPTION)
    .action((disk: string, opts: { json?: boolean; raw?: boolean; sourceFormat?: string; searchPath?: string[]; forceShare?: boolean }) =>
      run(async () => {
        // --raw is the old spelling of -f raw.
        const format = sourceFormat(opts.raw ? { sourceFormat: 'raw' } : opts);
        const info = await inspect(disk, { ...format, ...(await parentSearch(opts)), ...forceShareOptions(opts) });
        if (opts.json) printJson(info);
        else printInfo(info);
        return EXIT.ok;
      }, opts.json ?? false),
    );

  program
    .command('create')
    .description('create a new disk, or with --parent a differencing disk (a checkpoint) over an existing one; a create that fails leaves no file')
    .argument('<disk>', 'path of the new file (must not exist); its extension (.vhdx .avhdx .vhd .avhd .raw .img) sets the format unless --format does')
    .option('--size <size>', 'virtual size, e.g. 10G, 512M')
    .option('--type <type>', 'fixed or dynamic (default dynamic; VHDX and VHD)')
    .option('--format <format>', 'vhdx, vhd or raw (default: the extension\'s, else vhdx); with --parent the parent\'s format')
    .option('--block-size <size>', 'payload block size (VHDX: 1M..256M, default 32M, checkpoints 2M; VHD: default 2M)')
    .option('--logical-sector <bytes>', '512 or 4096 (VHDX; default 512; a checkpoint takes its parent\'s)')
    .option('--physical-sector <bytes>', '512 or 4096 (VHDX; default 4096; a checkpoint takes its parent\'s)')
    .option('--parent <disk>', 'make a differencing disk over this parent (its format, size and sector sizes); a parent in another folder is remembered, so later commands follow the link (docs/chains.md)')
    .option('--json', 'print JSON')
    .action((disk: string, opts: { size?: string; type?: string; format?: string; blockSize?: string; logicalSector?: string; physicalSector?: string; parent?: string; json?: boolean }) =>
      run(async () => {
        const blockSize = opts.blockSize ? parseSize(opts.blockSize, 'block size') : undefined;
        let created;
        if (opts.parent) {
          refuseIgnored(
            [[opts.size, '--size'], [opts.type, '--type'], [opts.format, '--format'], [opts.logicalSector, '--logical-sector'], [opts.physicalSector, '--physical-sector']],
            'to a differencing disk: it takes its format, size and sector sizes from its parent',
          );
          const named = formatOfName(disk);
          if (named === 'raw') throw new DiskchainError('INVALID_ARGUMENT', `${disk} is named like a raw image, which cannot be a differencing disk; name it .avhdx (or .avhd for a VHD parent)`);
          created = await createChild(disk, opts.parent, { ...(blockSize ? { blockSize } : {}), ...(named ? { format: named } : {}) });
        } else {
          if (!opts.size) throw new DiskchainError('INVALID_ARGUMENT', 'create needs --size (or --parent for a differencing disk)');
          const format = targetFormat(disk, opts.format, '--format', 'vhdx');
          if (opts.type !== undefined && opts.type !== 'fixed' && opts.type !== 'dynamic') throw new DiskchainError('INVALID_ARGUMENT', `--type must be fixed or dynamic, not ${opts.type}`);
          if (format === 'raw') refuseIgnored([[opts.type, '--type'], [opts.blockSize, '--block-size'], [opts.logicalSector, '--logical-sector'], [opts.physicalSector, '--physical-sector']], 'to a raw image (a sparse file of --size bytes)');
          if (format === 'vhd') refuseIgnored([[opts.logicalSector, '--logical-sector'], [opts.physicalSector, '--physical-sector']], 'to a VHD (its sectors are 512 bytes)');
          const bar = progressBar('allocate');
          created = await createDisk(disk, format, {
            diskType: format === 'raw' ? 'fixed' : (opts.type as 'fixed' | 'dynamic' | undefined) ?? 'dynamic',
            virtualSize: parseSize(opts.size),
            ...(opts.logicalSector !== undefined ? { logicalSectorSize: sectorSize(opts.logicalSector, '--logical-sector') } : format === 'vhdx' ? { logicalSectorSize: 512 } : {}),
            ...(opts.physicalSector !== undefined ? { physicalSectorSize: sectorSize(opts.physicalSector, '--physical-sector') } : format === 'vhdx' ? { physicalSectorSize: 4096 } : {}),
            ...(blockSize ? { blockSize } : {}),
            onProgress: bar.onProgress,
            signal: interruptSignal(),
          }).finally(() => bar.stop());
        }
        const facts = { path: disk, format: created.format, diskType: created.diskType, virtualSize: created.virtualSize, blockSize: created.blockSize };
        await created.close();
        if (opts.json) printJson(facts);
        else say(`created ${facts.diskType} ${facts.format.toUpperCase()} ${disk}: ${formatBytes(facts.virtualSize)}`);
        return EXIT.ok;
      }, opts.json ?? false),
    );

  program
    .command('check')
    .description('validate a disk file\'s structure and its parent link; never writes. Exit 0 when clean, 1 with findings, 3 when the file is not a disk image at all')
    .argument('<disk>')
    .addOption(sourceFormatOption())
    .option(...SEARCH_PATH_OPTION)
    .option('--json', 'print JSON')
    .option(...FORCE_SHARE_OPTION)
    .action((disk: string, opts: { json?: boolean; sourceFormat?: string; searchPath?: string[]; forceShare?: boolean }) =>
      run(async () => {
        const report = await checkDisk(disk, { ...sourceFormat(opts), ...(await parentSearch(opts)), ...forceShareOptions(opts) });
        if (opts.json) printJson(report);
        else {
          for (const f of report.findings) {
            const where = f.offset !== undefined && !f.message.includes(`offset ${f.offset} `) ? ` at offset ${f.offset} (0x${f.offset.toString(16)})` : '';
            process.stdout.write(`${f.severity.toUpperCase()} ${f.code}: ${f.message}${where}\n`);
          }
          if (report.format !== null) say(report.clean ? `${disk}: no problems found` : `${disk}: ${report.findings.filter((f) => f.severity !== 'info').length} problem(s)`);
        }
        // Not a disk image at all: the input is wrong, not the disk (exit 3, as info and read).
        if (report.format === null) return EXIT.badInput;
        return report.clean ? EXIT.ok : EXIT.findings;
      }, opts.json ?? false),
    );
}

function sectorSize(text: string, flag: string): number {
  if (text !== '512' && text !== '4096') throw new DiskchainError('INVALID_ARGUMENT', `${flag} must be 512 or 4096, not ${text}`);
  return Number(text);
}

function printInfo(info: DiskInfo): void {
  const d = info.details;
  const rows: [string, string][] = [
    ['file', info.path],
    ['format', info.format.toUpperCase()],
    ['type', info.diskType],
    ['virtual size', formatBytes(info.virtualSize)],
    ['block size', formatBytes(info.blockSize)],
    ['sector size', `${info.logicalSectorSize} logical, ${info.physicalSectorSize} physical`],
    ['file size', formatBytes(info.fileSize)],
    ['allocated', formatBytes(info.allocatedBytes)],
  ];
  for (const key of ['virtualDiskId', 'dataWriteGuid', 'uniqueId', 'timestamp', 'creator', 'logGuid', 'logReplay', 'logReplayedIn']) {
    if (d[key] !== undefined && d[key] !== null) rows.push([key, String(d[key])]);
  }
  if (info.parent) {
    for (const l of info.parent.locators) rows.push([`parent ${l.key}`, l.path]);
    const e = info.parent.expected;
    rows.push(['parent expected', e.format === 'vhdx' ? `DataWriteGuid ${e.dataWriteGuid}` : `unique id ${e.uniqueId}, timestamp ${e.timestamp}`]);
    const notFound = (p: ParentInfo): string => (p.problem?.code === 'PATH_NOT_ALLOWED' ? `no: only outside the allowed folders (${p.attempts.filter((a) => a.result === 'outside the allowed folders').map((a) => a.tried).join(', ')}); --search-path <its folder> allows it` : `no (${p.problem?.code ?? 'PARENT_NOT_FOUND'}; tried ${p.attempts.map((a) => `${a.tried}: ${a.result}`).join(', ') || 'nothing'})`);
    rows.push(['parent found', info.parent.found ?? notFound(info.parent)]);
    if (info.parent.found) rows.push(['parent identity', parentIdentityText(info.parent)]);
  }
  if (info.pendingMerge) rows.push(['pending merge', info.pendingMerge.advice]);
  if (info.problems.length > 0) {
    const [first] = info.problems;
    rows.push(['PROBLEMS', `${info.problems.length}: ${first!.code}: ${first!.message}${info.problems.length > 1 ? '; ...' : ''} (diskchain check lists them all)`]);
  }
  const width = Math.max(...rows.map(([k]) => k.length));
  for (const [k, v] of rows) process.stdout.write(`${k.padEnd(width)}  ${v}\n`);
}

function parentIdentityText(parent: ParentInfo): string {
  if (parent.matchedBy === 'alternate') return 'matches through parent_linkage2 (the DataWriteGuid a merge into the parent gave it; `diskchain merge` again finishes an interrupted one)';
  if (parent.identityMatches === null) return 'unknown (the parent could not be opened)';
  return parent.identityMatches ? 'matches' : 'DOES NOT MATCH (the parent changed after this child was made)';
}
