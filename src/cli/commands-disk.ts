import type { Command } from 'commander';
import { checkDisk } from '../api/check.js';
import { createChild, createDisk } from '../api/create.js';
import { inspect, type DiskInfo, type ParentInfo } from '../api/info.js';
import { resize } from '../api/resize.js';
import { DiskchainError } from '../io/errors.js';
import { EXIT, printJson, type Run } from './output.js';
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
        else process.stdout.write(`resized ${r.path} from ${formatBytes(r.previousSize)} to ${formatBytes(r.size)}\n`);
        return EXIT.ok;
      }, opts.json ?? false),
    );

  program
    .command('info')
    .description('show what a disk file is: format, type, sizes, identity, parent and log state (read-only)')
    .argument('<disk>', 'a VHDX/AVHDX or VHD/AVHD file (found by content, not by name)')
    .option('--json', 'print JSON')
    .option('--raw', 'treat the file as a raw image')
    .action((disk: string, opts: { json?: boolean; raw?: boolean }) =>
      run(async () => {
        const info = await inspect(disk, opts.raw ? { format: 'raw' } : {});
        if (opts.json) printJson(info);
        else printInfo(info);
        return EXIT.ok;
      }, opts.json ?? false),
    );

  program
    .command('create')
    .description('create a new disk, or with --parent a differencing disk (a checkpoint) over an existing one')
    .argument('<disk>', 'path of the new file (must not exist)')
    .option('--size <size>', 'virtual size, e.g. 10G, 512M')
    .option('--type <type>', 'fixed or dynamic', 'dynamic')
    .option('--format <format>', 'vhdx or vhd (with --parent: the parent\'s format)', 'vhdx')
    .option('--block-size <size>', 'payload block size (VHDX: 1M..256M, default 32M; checkpoints 2M)')
    .option('--logical-sector <bytes>', '512 or 4096 (VHDX)', '512')
    .option('--physical-sector <bytes>', '512 or 4096 (VHDX)', '4096')
    .option('--parent <disk>', 'make a differencing disk over this parent')
    .option('--json', 'print JSON')
    .action((disk: string, opts: { size?: string; type: string; format: string; blockSize?: string; logicalSector: string; physicalSector: string; parent?: string; json?: boolean }) =>
      run(async () => {
        const blockSize = opts.blockSize ? parseSize(opts.blockSize, 'block size') : undefined;
        let created;
        if (opts.parent) {
          if (opts.size) throw new DiskchainError('INVALID_ARGUMENT', 'a differencing disk takes its size from its parent; drop --size');
          created = await createChild(disk, opts.parent, blockSize ? { blockSize } : {});
        } else {
          if (!opts.size) throw new DiskchainError('INVALID_ARGUMENT', 'create needs --size (or --parent for a differencing disk)');
          if (opts.type !== 'fixed' && opts.type !== 'dynamic') throw new DiskchainError('INVALID_ARGUMENT', `--type must be fixed or dynamic, not ${opts.type}`);
          if (opts.format !== 'vhdx' && opts.format !== 'vhd') throw new DiskchainError('INVALID_ARGUMENT', `--format must be vhdx or vhd, not ${opts.format}`);
          created = await createDisk(disk, opts.format, {
            diskType: opts.type,
            virtualSize: parseSize(opts.size),
            logicalSectorSize: Number(opts.logicalSector),
            physicalSectorSize: Number(opts.physicalSector),
            ...(blockSize ? { blockSize } : {}),
          });
        }
        const facts = { path: disk, format: created.format, diskType: created.diskType, virtualSize: created.virtualSize, blockSize: created.blockSize };
        await created.close();
        if (opts.json) printJson(facts);
        else process.stdout.write(`created ${facts.diskType} ${facts.format.toUpperCase()} ${disk}: ${formatBytes(facts.virtualSize)}\n`);
        return EXIT.ok;
      }, opts.json ?? false),
    );

  program
    .command('check')
    .description('validate a disk file\'s structure and its parent link; never writes')
    .argument('<disk>')
    .option('--json', 'print JSON')
    .action((disk: string, opts: { json?: boolean }) =>
      run(async () => {
        const report = await checkDisk(disk);
        if (opts.json) printJson(report);
        else {
          for (const f of report.findings) {
            const where = f.offset !== undefined ? ` at offset ${f.offset} (0x${f.offset.toString(16)})` : '';
            process.stdout.write(`${f.severity.toUpperCase()} ${f.code}: ${f.message}${where}\n`);
          }
          process.stdout.write(report.clean ? `${disk}: no problems found\n` : `${disk}: ${report.findings.filter((f) => f.severity !== 'info').length} problem(s)\n`);
        }
        return report.clean ? EXIT.ok : EXIT.findings;
      }, opts.json ?? false),
    );
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
    rows.push(['parent found', info.parent.found ?? `no (tried ${info.parent.attempts.map((a) => a.tried).join(', ')})`]);
    if (info.parent.found) rows.push(['parent identity', parentIdentityText(info.parent)]);
  }
  const width = Math.max(...rows.map(([k]) => k.length));
  for (const [k, v] of rows) process.stdout.write(`${k.padEnd(width)}  ${v}\n`);
}

function parentIdentityText(parent: ParentInfo): string {
  if (parent.matchedBy === 'alternate') return 'matches through parent_linkage2 (the DataWriteGuid a merge into the parent gave it; `diskchain merge` again finishes an interrupted one)';
  if (parent.identityMatches === null) return 'unknown (the parent could not be opened)';
  return parent.identityMatches ? 'matches' : 'DOES NOT MATCH (the parent changed after this child was made)';
}
