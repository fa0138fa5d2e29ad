import { resolve } from 'node:path';
import type { Command } from 'commander';
import { createVm, importVm, listVms, openVm, withVm, type VmDescription } from '../api/vm.js';
import { DiskchainError } from '../io/errors.js';
import { EXIT, interruptSignal, printJson, say, type Run } from './output.js';
import { formatBytes, parseSize } from './sizes.js';
import { registerVmRunCommands } from './commands-vm-run.js';

const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

function describeText(d: VmDescription): string {
  const lines = [
    `${d.name}  (${d.id})`,
    `  folder: ${d.folder}`,
    `  memory ${formatBytes(d.config.memoryBytes)}, ${d.config.cpus} cpu(s), checkpoint type ${d.config.checkpointType}`,
    `  ${d.checkpoints.length} checkpoint(s), ${formatBytes(d.bytes)} on disk`,
    '  disks:',
  ];
  for (const disk of d.disks) {
    lines.push(`    ${disk.id} (${disk.format}, ${disk.virtualSize === null ? 'unreadable' : formatBytes(disk.virtualSize)}): Now writes ${disk.path}`);
    for (const l of disk.chain) {
      const by = l.namedBy === 'now' ? 'Now' : l.namedBy ? `checkpoint "${d.checkpoints.find((c) => c.id === l.namedBy)?.name}"` : 'unnamed';
      lines.push(`      ${l.file}  ${by}, ${formatBytes(l.bytes)}`);
    }
  }
  if (d.unnamed.length) lines.push(`  unnamed layers: ${d.unnamed.map((u) => `${u.file} (${u.children} children)`).join(', ')}`);
  for (const p of d.pending) lines.push(`  PENDING: ${p.operation} (${p.command}, process ${p.pid}, started ${p.started}); the next command that changes the VM finishes or rolls it back`);
  return lines.join('\n') + '\n';
}

export function registerVmCommands(program: Command, run: Run): void {
  const vm = program.command('vm').description('virtual machine folders: a manifest (vm.json), the disks, the checkpoint tree');

  vm.command('create')
    .description('make a VM folder: adopt existing disks (a disk with parents brings its whole chain) and/or create new empty ones')
    .argument('<folder>', 'a new or empty folder')
    .option('--name <name>', 'the VM name (default: the folder name)')
    .option('--disk <file>', 'adopt an existing VHDX/VHD (repeatable); needs --copy or --move', collect)
    .option('--copy', 'copy adopted disks into the VM folder (the originals stay as they are)')
    .option('--move', 'move adopted disks into the VM folder')
    .option('--new-disk <size>', 'create an empty dynamic VHDX of this size (repeatable)', collect)
    .option('--memory <size>', 'memory', '1G')
    .option('--cpus <n>', 'virtual processors', '1')
    .option('--kernel <file>', 'boot this kernel (QEMU -kernel) instead of the first disk')
    .option('--initrd <file>', 'with --kernel: the initial ramdisk')
    .option('--append <cmdline>', 'with --kernel: the kernel command line')
    .option('--no-guest-agent', "no virtio-serial port for qemu-guest-agent (production checkpoints then fall back as the checkpoint type says)")
    .option('--checkpoint-type <type>', 'standard, production (falls back to standard), productionOnly or disabled', 'production')
    .option('--automatic-checkpoints', 'take a checkpoint at every start and remove it at a clean shutdown')
    .option('--reserve <size>', 'warn when the VM folder has less free space than this (default 1G)')
    .option('--json', 'print JSON')
    .action((folder: string, opts: { name?: string; disk?: string[]; copy?: boolean; move?: boolean; newDisk?: string[]; memory: string; cpus: string; kernel?: string; initrd?: string; append?: string; guestAgent: boolean; checkpointType: string; automaticCheckpoints?: boolean; reserve?: string; json?: boolean }) =>
      run(async () => {
        if (opts.copy && opts.move) throw new DiskchainError('INVALID_ARGUMENT', 'choose one of --copy and --move');
        const cpus = Number(opts.cpus);
        if (!Number.isInteger(cpus) || cpus < 1) throw new DiskchainError('INVALID_ARGUMENT', `--cpus "${opts.cpus}" is not a positive whole number`);
        if (!opts.kernel && (opts.initrd || opts.append !== undefined)) throw new DiskchainError('INVALID_ARGUMENT', '--initrd and --append go with --kernel');
        const types = ['standard', 'production', 'productionOnly', 'disabled'] as const;
        const checkpointType = types.find((t) => t === opts.checkpointType);
        if (!checkpointType) throw new DiskchainError('INVALID_ARGUMENT', `--checkpoint-type "${opts.checkpointType}" is not one of ${types.join(', ')}`);
        const result = await createVm(folder, {
          checkpointType,
          settings: {
            ...(opts.kernel ? { boot: { kind: 'kernel' as const, kernel: resolve(opts.kernel), ...(opts.initrd ? { initrd: resolve(opts.initrd) } : {}), ...(opts.append !== undefined ? { append: opts.append } : {}) } } : {}),
            ...(opts.guestAgent === false ? { guestAgent: false } : {}),
            ...(opts.automaticCheckpoints ? { automaticCheckpoints: true } : {}),
            ...(opts.reserve ? { freeSpaceReserveBytes: parseSize(opts.reserve, '--reserve') } : {}),
          },
          ...(opts.name ? { name: opts.name } : {}),
          disks: opts.disk ?? [],
          ...(opts.copy ? { adopt: 'copy' as const } : opts.move ? { adopt: 'move' as const } : {}),
          newDisks: (opts.newDisk ?? []).map((s) => ({ size: parseSize(s, '--new-disk') })),
          memoryBytes: parseSize(opts.memory, '--memory'),
          cpus,
          signal: interruptSignal(),
        });
        if (opts.json) printJson(result);
        else say(`created VM "${result.name}" in ${result.folder}\n${result.disks.map((d) => `  ${d.id}: ${d.path}${d.layers > 1 ? ` (${d.layers} layers)` : ''}`).join('\n')}\n`);
        return EXIT.ok;
      }, opts.json ?? false),
    );

  registerVmRunCommands(vm, run);

  vm.command('import')
    .description("make a VM from the disks a lost Hyper-V run left in a folder: the trees scan finds become its disks, the newest leaf Now's file, every other layer a checkpoint named by its file time (branches kept). Several disks must have trees of one shape")
    .argument('<folder-of-disks>')
    .argument('<new-vm>', 'a new or empty folder')
    .option('--name <name>', 'the VM name (default: the folder name)')
    .option('--copy', 'copy the files into the VM folder (the originals stay as they are)')
    .option('--move', 'move the files into the VM folder')
    .option('--memory <size>', 'memory', '1G')
    .option('--cpus <n>', 'virtual processors', '1')
    .option('--json', 'print JSON')
    .action((source: string, folder: string, opts: { name?: string; copy?: boolean; move?: boolean; memory: string; cpus: string; json?: boolean }) =>
      run(async () => {
        if (opts.copy === opts.move) throw new DiskchainError('INVALID_ARGUMENT', 'say how the files come into the VM folder: --copy (the originals stay as they are) or --move');
        const cpus = Number(opts.cpus);
        if (!Number.isInteger(cpus) || cpus < 1) throw new DiskchainError('INVALID_ARGUMENT', `--cpus "${opts.cpus}" is not a positive whole number`);
        const r = await importVm(source, folder, { adopt: opts.copy ? 'copy' : 'move', ...(opts.name ? { name: opts.name } : {}), memoryBytes: parseSize(opts.memory, '--memory'), cpus, signal: interruptSignal() });
        if (opts.json) printJson(r);
        else {
          const lines = [`imported "${r.name}" into ${r.folder}: ${r.disks.length} disk(s), ${r.checkpoints.length} checkpoint(s)`];
          for (const c of r.checkpoints) lines.push(`  checkpoint "${c.name}" (${c.id})`);
          lines.push(`  Now writes ${r.now.files.join(', ')}`);
          for (const l of r.leftOut) lines.push(`  left out ${l.path}: ${l.reason}`);
          process.stdout.write(lines.join('\n') + '\n');
        }
        return EXIT.ok;
      }, opts.json ?? false),
    );

  vm.command('list')
    .description('VM folders at the roots and up to two levels below (read-only)')
    .argument('<root...>')
    .option('--json', 'print JSON')
    .action((roots: string[], opts: { json?: boolean }) =>
      run(async () => {
        const vms = await listVms(roots);
        if (opts.json) printJson({ vms });
        else {
          for (const v of vms) {
            if (v.error) process.stdout.write(`${v.folder}  UNREADABLE: ${v.error.message}\n`);
            else process.stdout.write(`${v.name}  ${v.folder}  ${v.disks} disk(s), ${v.checkpoints} checkpoint(s)${v.pending ? `, ${v.pending} pending operation(s)` : ''}\n`);
          }
          if (vms.length === 0) process.stdout.write('no VM folders found\n');
        }
        return EXIT.ok;
      }, opts.json ?? false),
    );

  vm.command('show')
    .description('the config, the disks with their chains, the checkpoint tree and sizes (read-only)')
    .argument('<vm>')
    .option('--json', 'print JSON (disks: [{ id, path }], path being the file Now writes)')
    .action((folder: string, opts: { json?: boolean }) =>
      run(
        () =>
          withVm(folder, { lock: 'none', command: 'vm show' }, async (v) => {
            const d = await v.describe({ reclaim: false });
            if (opts.json) printJson(d);
            else process.stdout.write(describeText(d));
            return EXIT.ok;
          }),
        opts.json ?? false,
      ),
    );

  vm.command('rm')
    .description("delete a VM: only the files its manifest owns (layers, checkpoint configs, vm.json); refuses without --yes")
    .argument('<vm>')
    .option('--yes', 'really delete')
    .option('--json', 'print JSON')
    .action((folder: string, opts: { yes?: boolean; json?: boolean }) =>
      run(async () => {
        if (!opts.yes) throw new DiskchainError('INVALID_ARGUMENT', `vm rm deletes the VM's disks and every checkpoint; pass --yes to do it`);
        const vmh = await openVm(folder, { command: 'vm rm' });
        const result = await vmh.delete();
        if (opts.json) printJson(result);
        else say(`deleted ${result.deleted.length} file(s)${result.left.length ? `; left in place (not the VM's): ${result.left.join(', ')}` : ''}\n`);
        return EXIT.ok;
      }, opts.json ?? false),
    );

  vm.command('resize-disk')
    .description("Resize-VHD on the VM's disk (grow; shrink a VHDX only when nothing allocated lies beyond the new end). Refused while the VM has checkpoints: remove them, or export a checkpoint to a new VM and resize that")
    .argument('<vm>')
    .argument('<disk>', 'the disk id (disk0, disk1, ...)')
    .requiredOption('--size <size>', 'the new virtual size (e.g. 20G)')
    .option('--json', 'print JSON')
    .action((folder: string, disk: string, opts: { size: string; json?: boolean }) =>
      run(
        () =>
          withVm(folder, { command: 'vm resize-disk' }, async (v) => {
            const r = await v.resizeDisk(disk, parseSize(opts.size, '--size'));
            if (opts.json) printJson(r);
            else say(`resized ${r.vm}'s ${r.disk} (${r.path}) from ${formatBytes(r.previousSize)} to ${formatBytes(r.size)}\n`);
            return EXIT.ok;
          }),
        opts.json ?? false,
      ),
    );

  vm.command('check')
    .description('report what is on disk and not in the tree (crash leftovers, stray layers) and the reverse, with a safe plan; --repair finishes or rolls back an interrupted operation, deletes our leftovers and merges unnamed layers down to one child')
    .argument('<vm>')
    .option('--repair', 'do the safe part of the plan')
    .option('--json', 'print JSON')
    .action((folder: string, opts: { repair?: boolean; json?: boolean }) =>
      run(
        () =>
          withVm(folder, { lock: opts.repair ? 'write' : 'none', recover: false, command: opts.repair ? 'vm check --repair' : 'vm check' }, async (v) => {
            const report = await v.check({ repair: opts.repair ?? false, signal: interruptSignal() });
            if (opts.json) printJson(report);
            else {
              const lines: string[] = [];
              if (report.repaired) {
                for (const r of report.repaired.recovered) lines.push(`repaired: ${r.operation} (${r.command}) ${r.outcome}`);
                for (const f of report.repaired.deleted) lines.push(`repaired: deleted ${f}`);
                for (const f of report.repaired.merged) lines.push(`repaired: merged ${f}`);
              }
              for (const f of report.findings) {
                lines.push(`${f.severity}: ${f.code}: ${f.message}`);
                for (const s of f.plan.steps) lines.push(`    ${f.plan.repair ? '(--repair) ' : ''}${s}`);
              }
              lines.push(report.clean ? 'the VM folder is consistent' : 'see the findings above');
              process.stdout.write(lines.join('\n') + '\n');
            }
            return report.clean ? EXIT.ok : EXIT.findings;
          }),
        opts.json ?? false,
      ),
    );
}
