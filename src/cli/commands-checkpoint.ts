import type { Command } from 'commander';
import { groupCheckpoint, groupRemove, withVm, type VmDescription } from '../api/vm.js';
import { applyVm, checkpointVm } from '../api/vm-runtime.js';
import { removeVm } from '../api/vm-remove.js';
import { DiskchainError } from '../io/errors.js';
import { EXIT, interruptSignal, printJson, say, progressBar, type Run } from './output.js';
import { formatBytes } from './sizes.js';

/** The tree, Now under its parent, as Hyper-V Manager's checkpoint pane shows it. */
export function treeText(d: VmDescription): string {
  const lines = [`${d.name}`];
  const size = (n: number | null): string => (n === null ? '?' : formatBytes(n).replace(/ \(.*\)$/, ''));
  const walk = (parent: string | null, indent: string): void => {
    const kids = d.checkpoints.filter((c) => c.parent === parent);
    const items: Array<{ now: true } | { now: false; c: (typeof kids)[number] }> = [...kids.map((c) => ({ now: false as const, c })), ...(d.now.parent === parent ? [{ now: true as const }] : [])];
    items.forEach((item, i) => {
      const last = i === items.length - 1;
      const branch = `${indent}${last ? '└─ ' : '├─ '}`;
      if (item.now) lines.push(`${branch}▶ Now  (own ${size(d.now.ownBytes)})`);
      else {
        const c = item.c;
        lines.push(`${branch}${c.name}  [${c.type}] ${c.created}  own ${size(c.ownBytes)}, removal reclaims ${size(c.reclaimBytes)}  ${c.id}${c.group ? `  group ${c.group}` : ''}`);
        walk(c.id, `${indent}${last ? '   ' : '│  '}`);
      }
    });
  };
  walk(null, '');
  for (const p of d.pending) lines.push(`PENDING: ${p.operation} (${p.command}, process ${p.pid}); the next command that changes the VM finishes or rolls it back`);
  return lines.join('\n') + '\n';
}

function checkpointLine(c: { id: string; name: string; created: string }): string {
  return `"${c.name}" (${c.id}, ${c.created})`;
}

export function registerCheckpointCommands(program: Command, run: Run): void {
  const cp = program.command('checkpoint').description("a VM's checkpoint tree: create, list, apply, remove, rename, export (create, apply and remove also on a running VM)");

  cp.command('create')
    .description('Checkpoint-VM: freeze every disk at once; each gets a new <disk>_<GUID>.avhdx that takes the writes. Several VMs: one group checkpoint, same instant, all or none')
    .argument('<vm...>')
    .option('--name <name>', 'the name (default "<VM> (<date time>)"); names may repeat')
    .option('--type <type>', "standard (a running VM's memory too) or production (the guest's file systems frozen, no memory); default: the VM's checkpoint type")
    .option('--json', 'print JSON')
    .action((folders: string[], opts: { name?: string; type?: string; json?: boolean }) =>
      run(async () => {
        if (opts.type !== undefined && opts.type !== 'standard' && opts.type !== 'production') throw new DiskchainError('INVALID_ARGUMENT', `--type "${opts.type}" is not standard or production`);
        if (folders.length > 1) {
          const result = await groupCheckpoint(folders, { ...(opts.name ? { name: opts.name } : {}), ...(opts.type ? { type: opts.type } : {}), signal: interruptSignal() });
          if (opts.json) printJson(result);
          else {
            const lines = result.checkpoints.map((c) => `  ${c.vm}: ${c.checkpoint.type} ${checkpointLine(c.checkpoint)}${c.pauseMs !== null ? `, the guest paused ${c.pauseMs.toFixed(1)} ms` : ''}${c.fallback ? ` (standard, not production: ${c.fallback})` : ''}`);
            if (result.pauseMs !== null) lines.push(`  the longest pause: ${result.pauseMs.toFixed(1)} ms`);
            say(`group ${result.group}:\n${lines.join('\n')}\n`);
          }
          return EXIT.ok;
        }
        const r = await checkpointVm(folders[0]!, { ...(opts.name ? { name: opts.name } : {}), ...(opts.type ? { type: opts.type } : {}), signal: interruptSignal() });
        const c = r.checkpoint;
        if (opts.json) printJson({ checkpoints: [c], running: r.running, pauseMs: r.running ? r.pauseMs : null, frozen: r.frozen, frozenMs: r.frozenMs, stateBytes: r.stateBytes, fallback: r.fallback });
        else {
          const lines = [`created ${c.type} checkpoint ${checkpointLine(c)}`, ...c.disks.map((d) => `  ${d.id}: froze ${d.file}`)];
          if (r.running) lines.push(`  the guest was paused ${r.pauseMs.toFixed(1)} ms${r.frozen !== null ? `; ${r.frozen} file system(s) frozen ${r.frozenMs!.toFixed(0)} ms` : ''}${r.stateBytes !== null ? `; memory state ${formatBytes(r.stateBytes)}` : ''}`);
          if (r.fallback) lines.push(`  standard, not production: ${r.fallback}`);
          say(lines.join('\n') + '\n');
        }
        return EXIT.ok;
      }, opts.json ?? false),
    );

  cp.command('list')
    .description('the tree with Now under the checkpoint it derives from: ids, names, times, type, own bytes, bytes a removal reclaims (read-only)')
    .argument('<vm>')
    .option('--json', 'print JSON (checkpoints: [{ id, name, parent, created, type, ... }], now: { parent })')
    .action((folder: string, opts: { json?: boolean }) =>
      run(
        () =>
          withVm(folder, { lock: 'none', command: 'checkpoint list' }, async (vm) => {
            const d = await vm.describe();
            if (opts.json) printJson({ vm: { id: d.id, name: d.name, folder: d.folder }, checkpoints: d.checkpoints, now: d.now, unnamed: d.unnamed, pending: d.pending });
            else process.stdout.write(treeText(d));
            return EXIT.ok;
          }),
        opts.json ?? false,
      ),
    );

  cp.command('apply')
    .description("Restore-VMSnapshot: Now starts again from the checkpoint. NOW'S CURRENT STATE IS DISCARDED unless --checkpoint-first saves it as a checkpoint first")
    .argument('<vm>')
    .argument('<checkpoint>', 'id or name')
    .option('--checkpoint-first [name]', 'save Now as a checkpoint first (Hyper-V\'s "Create checkpoint and apply")')
    .option('--json', 'print JSON')
    .action((folder: string, ref: string, opts: { checkpointFirst?: boolean | string; json?: boolean }) =>
      run(async () => {
        const bar = progressBar('merge');
        try {
          const r = await applyVm(folder, ref, { ...(opts.checkpointFirst !== undefined ? { checkpointFirst: opts.checkpointFirst } : {}), signal: interruptSignal(), onProgress: bar.onProgress });
          bar.stop();
          if (opts.json) printJson(r);
          else {
            const then = r.state === 'Running' ? 'the VM runs from that instant' : r.state === 'Saved' ? 'the VM is Saved at that instant: vm start resumes it' : 'the VM is off';
            const lines = [
              ...(r.savedFirst ? [`saved Now first as ${checkpointLine(r.savedFirst)}${r.checkpointFirstPauseMs !== null ? ` (the guest paused ${r.checkpointFirstPauseMs.toFixed(1)} ms)` : ''}`] : [`discarded Now (${r.discarded.join(', ') || 'nothing'})`]),
              `applied "${r.applied.name}" (${r.applied.id}): Now starts from it; ${then}`,
            ];
            say(lines.join('\n') + '\n');
          }
          return EXIT.ok;
        } finally {
          bar.stop();
        }
      }, opts.json ?? false),
    );

  cp.command('remove')
    .description("Remove-VMSnapshot: the checkpoint goes; its layers merge with their only child (the direction that copies less), stay as unnamed layers while several children depend on them, or are deleted (an off-branch leaf). Now's content never changes")
    .argument('<vm...>', 'the VM (several VMs with --group)')
    .option('--checkpoint <checkpoint>', 'id or name (or give it as the last argument)')
    .option('--subtree', 'remove the checkpoint and every checkpoint below it')
    .option('--group <group-id>', "remove a group checkpoint's members from each VM given, running or off, all or none: every check (the member, a busy worker, the space) comes first; once decided every member's goes, across a crash too (vm check --repair or the next start finishes it); running VMs merge live")
    .option('--json', 'print JSON')
    .action((args: string[], opts: { checkpoint?: string; subtree?: boolean; group?: string; json?: boolean }) =>
      run(async () => {
        const bar = progressBar('merge');
        try {
          const common = { subtree: opts.subtree ?? false, signal: interruptSignal(), onProgress: bar.onProgress };
          if (opts.group) {
            const results = await groupRemove(args, opts.group, common);
            bar.stop();
            if (opts.json) printJson(results);
            else say(results.vms.map((r) => `${r.folder}: removed ${r.result.removed.map((c) => `"${c.name}"`).join(', ')}`).join('\n') + '\n');
            return EXIT.ok;
          }
          const ref = opts.checkpoint ?? (args.length === 2 ? args[1] : undefined);
          if (!ref || args.length > 2 || (opts.checkpoint && args.length > 1)) throw new DiskchainError('INVALID_ARGUMENT', 'usage: checkpoint remove <vm> <checkpoint> [--subtree]');
          {
            const r = await removeVm(args[0]!, ref, common);
            bar.stop();
            if (opts.json) printJson(r);
            else {
              const lines = [`removed ${r.removed.map((c) => `"${c.name}"`).join(', ')}`];
              for (const m of r.merged) lines.push(`  merged ${m.victim} ${m.direction === 'merge' ? 'into' : 'with'} ${m.survivor} (${formatBytes(m.bytesCopied)} copied)`);
              for (const f of r.deleted) lines.push(`  deleted ${f}`);
              for (const f of r.kept) lines.push(`  kept ${f} as an unnamed layer (several children depend on it)`);
              say(lines.join('\n'));
            }
            return EXIT.ok;
          }
        } finally {
          bar.stop();
        }
      }, opts.json ?? false),
    );

  cp.command('rename')
    .description('Rename-VMSnapshot (non-empty, at most 100 characters; names may repeat)')
    .argument('<vm>')
    .argument('<checkpoint>', 'id or name')
    .argument('<new-name>')
    .option('--json', 'print JSON')
    .action((folder: string, ref: string, name: string, opts: { json?: boolean }) =>
      run(
        () =>
          withVm(folder, { command: 'checkpoint rename' }, async (vm) => {
            const r = await vm.rename(ref, name);
            if (opts.json) printJson(r);
            else say(`renamed "${r.previous}" to "${r.name}" (${r.id})\n`);
            return EXIT.ok;
          }),
        opts.json ?? false,
      ),
    );

  cp.command('export')
    .description('Export-VMSnapshot: a new standalone VM folder whose disks are flattened at the checkpoint, with the config as it was then')
    .argument('<vm>')
    .argument('<checkpoint>', 'id or name')
    .argument('<folder>', 'the new VM folder (must not exist, or be empty)')
    .option('-O, --output-format <format>', 'vhdx, vhd or raw (default: each disk keeps its format)')
    .option('--json', 'print JSON')
    .action((folder: string, ref: string, target: string, opts: { outputFormat?: string; json?: boolean }) =>
      run(
        () =>
          withVm(folder, { lock: 'read', command: 'checkpoint export' }, async (vm) => {
            const format = opts.outputFormat;
            if (format !== undefined && format !== 'vhdx' && format !== 'vhd' && format !== 'raw') throw new DiskchainError('INVALID_ARGUMENT', `-O must be vhdx, vhd or raw, not "${format}"`);
            const bar = progressBar('export');
            try {
              const r = await vm.export(ref, target, { ...(format ? { format } : {}), signal: interruptSignal(), onProgress: bar.onProgress });
              bar.stop();
              if (opts.json) printJson(r);
              else say(`exported "${r.checkpoint.name}" to ${r.folder}\n${r.disks.map((d) => `  ${d.id}: ${d.path}`).join('\n')}\n`);
              return EXIT.ok;
            } finally {
              bar.stop();
            }
          }),
        opts.json ?? false,
      ),
    );
}
