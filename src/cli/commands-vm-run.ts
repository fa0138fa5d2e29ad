import type { Command } from 'commander';
import { pauseVm, resumeVm, runWorkerProcess, saveVm, startVm, stopVm, vmStatus, type VmStatus } from '../api/vm-runtime.js';
import { DiskchainError } from '../io/errors.js';
import { EXIT, printJson, type Run } from './output.js';
import { formatBytes } from './sizes.js';

function duration(ms: number): string {
  const s = Math.floor(ms / 1000);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h > 0 ? `${h}h${String(m).padStart(2, '0')}m` : m > 0 ? `${m}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

export function statusText(s: VmStatus): string {
  const lines = [`${s.name}: ${s.state}${s.uptimeMs !== null ? `, up ${duration(s.uptimeMs)}` : ''}${s.workerPid !== null ? `, worker pid ${s.workerPid}` : ''}${s.qemuPid !== null ? `, QEMU pid ${s.qemuPid}` : ''}${s.accel ? ` (${s.accel})` : ''}`];
  if (s.busy) lines.push(`  busy: ${s.busy}`);
  if (s.reason) lines.push(`  why: ${s.reason}`);
  if (s.critical) lines.push(`  Paused-Critical: ${s.critical.operation} on ${s.critical.device}: ${s.critical.reason}; free space, then: diskchain vm resume`);
  if (s.saved) lines.push(`  saved state from ${s.saved.created}${s.saved.checkpoint ? ` (checkpoint ${s.saved.checkpoint})` : ''}: vm start resumes it`);
  for (const w of s.warnings) lines.push(`  warning: ${w}`);
  if (s.lowSpace) lines.push(`  warning: the VM folder's file system has ${formatBytes(s.lowSpace.free)} free, less than the reserve of ${formatBytes(s.lowSpace.reserve)}: the guest pauses (Paused-Critical) when it is full`);
  return lines.join('\n') + '\n';
}

/** vm start, stop, save, pause, resume, status (and the hidden worker the detached start runs). */
export function registerVmRunCommands(vm: Command, run: Run): void {
  const print = (json: boolean | undefined) => (s: VmStatus): number => {
    if (json) printJson(s);
    else process.stdout.write(statusText(s));
    return EXIT.ok;
  };

  vm.command('start')
    .description("start the VM on QEMU (KVM when usable, else TCG): a worker serves Now's disks over NBD in <vm>/run/ and owns the VM until it is off; a Saved VM resumes where it was. Without --detach the command is the worker (Ctrl-C shuts the VM down)")
    .argument('<vm>')
    .option('--detach', 'run the worker in the background (its log: <vm>/run/worker.log) and return once the guest runs')
    .option('--json', 'print JSON')
    .action((folder: string, opts: { detach?: boolean; json?: boolean }) =>
      run(async () => {
        if (opts.detach) return print(opts.json)(await startVm(folder, { workerCommand: [process.argv[1]!, 'vm', 'worker'] }));
        const before = await vmStatus(folder);
        if (before.workerPid !== null && !before.stale) throw new DiskchainError('VM_STATE', `the VM is already ${before.state} (worker pid ${before.workerPid})`, { state: before.state });
        const last = await runWorkerProcess(folder, {
          onReady: (s) => {
            if (opts.json) printJson(s);
            else process.stdout.write(`${statusText(s)}running in the foreground: Ctrl-C shuts it down\n`);
          },
        });
        if (opts.json) printJson(last);
        else process.stdout.write(statusText(last));
        return EXIT.ok;
      }, opts.json ?? false),
    );

  vm.command('worker', { hidden: true })
    .argument('<vm>')
    .action((folder: string) =>
      run(async () => {
        await runWorkerProcess(folder);
        return EXIT.ok;
      }, false),
    );

  vm.command('stop')
    .description('shut the VM down: the ACPI power button, then a hard stop after --timeout; --force: a hard stop at once (Turn Off)')
    .argument('<vm>')
    .option('--force', 'turn it off at once')
    .option('--timeout <seconds>', 'how long the guest has to power off', '60')
    .option('--json', 'print JSON')
    .action((folder: string, opts: { force?: boolean; timeout: string; json?: boolean }) =>
      run(async () => {
        const seconds = Number(opts.timeout);
        if (!Number.isFinite(seconds) || seconds <= 0) throw new DiskchainError('INVALID_ARGUMENT', `--timeout "${opts.timeout}" is not a positive number of seconds`);
        return print(opts.json)(await stopVm(folder, { force: opts.force ?? false, timeoutMs: seconds * 1000 }));
      }, opts.json ?? false),
    );

  vm.command('save')
    .description("save the VM: memory and device state into the VM folder, QEMU ends, the VM is Saved; vm start resumes it")
    .argument('<vm>')
    .option('--json', 'print JSON')
    .action((folder: string, opts: { json?: boolean }) => run(async () => print(opts.json)(await saveVm(folder)), opts.json ?? false));

  vm.command('pause')
    .description('pause the guest (its vCPUs stop; QEMU and the disks stay)')
    .argument('<vm>')
    .option('--json', 'print JSON')
    .action((folder: string, opts: { json?: boolean }) => run(async () => print(opts.json)(await pauseVm(folder)), opts.json ?? false));

  vm.command('resume')
    .description('resume a Paused or Paused-Critical guest (after space was freed, the failed write is retried)')
    .argument('<vm>')
    .option('--json', 'print JSON')
    .action((folder: string, opts: { json?: boolean }) => run(async () => print(opts.json)(await resumeVm(folder)), opts.json ?? false));

  vm.command('status')
    .description('Off, Running, Paused, Paused-Critical (and why), Saved; uptime, worker and QEMU pids; a dead worker or QEMU is reported (read-only)')
    .argument('<vm>')
    .option('--json', 'print JSON')
    .action((folder: string, opts: { json?: boolean }) => run(async () => print(opts.json)(await vmStatus(folder)), opts.json ?? false));
}
