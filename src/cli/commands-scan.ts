import { isAbsolute, relative } from 'node:path';
import type { Command } from 'commander';
import { DiskchainError } from '../io/errors.js';
import { describeIdentity } from '../chain/identity.js';
import { scanFolders, type ScanReport, type ScanTree } from '../ops/scan.js';
import { EXIT, interruptSignal, printJson, type Run } from './output.js';


export function registerScanCommands(program: Command, run: Run): void {
  program
    .command('scan')
    .description('find every VHDX/VHD in folders by content, rebuild checkpoint trees by identity (renamed or moved files included), report broken links and print a recovery plan (read-only)')
    .argument('<folder...>', 'folders to walk (recursively), or single files')
    .option('--max-depth <n>', 'folder levels walked below each folder', '8')
    .option('--max-files <n>', 'files probed at most', '100000')
    .option('--json', 'print JSON')
    .addHelpText(
      'after',
      `
Exit codes: exit 0 when every tree is whole (stale links that only need re-pointing included);
1 when there are orphans, identity mismatches, unreadable or damaged files, or cycles (the plan says
what to run); 2 for a bad option or a folder that does not exist; 130 when cancelled.
Symbolic links to folders are followed once each; sockets, FIFOs and devices are never opened.`,
    )
    .action((folders: string[], opts: { maxDepth: string; maxFiles: string; json?: boolean }) =>
      run(async () => {
        const report = await scanFolders(folders, {
          maxDepth: whole(opts.maxDepth, '--max-depth'),
          maxFiles: whole(opts.maxFiles, '--max-files'),
          signal: interruptSignal(),
        });
        if (opts.json) printJson(report);
        else printReport(report);
        return report.summary.consistent ? EXIT.ok : EXIT.findings;
      }, opts.json ?? false),
    );
}

function whole(text: string, flag: string): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(n)) throw new DiskchainError('INVALID_ARGUMENT', `${flag} must be a whole number, not ${text}`);
  return n;
}

function printReport(r: ScanReport): void {
  const out: string[] = [];
  const base = r.folders[0]!;
  const show = (p: string): string => {
    const rel = relative(base, p);
    return r.folders.length === 1 && rel !== '' && !rel.startsWith('..') && !isAbsolute(rel) ? rel : p;
  };
  out.push(`scanned ${r.folders.join(', ')}: ${r.summary.disks} disk(s) in ${r.trees.length} tree(s)${r.folders.length === 1 ? ` (paths below are relative to ${base})` : ''}`);
  r.trees.forEach((t, i) => out.push('', ...drawTree(t, i + 1, show)));
  section(out, 'orphans (parent not found by identity)', r.orphans, (o) => [
    `${show(o.path)} expects a parent with ${describeIdentity(o.expected)}`,
    ...o.lastKnown.map((l) => `    last known ${l.key}: ${l.path}`),
    ...o.targets.map((t) => `    tried ${t.path} (${t.state})`),
  ]);
  section(out, 'identity mismatches (a stored path leads to a different disk)', r.identityMismatches, (m) => [
    `${show(m.child)}: ${m.key} leads to ${show(m.found)}, which has ${m.foundIdentity ? describeIdentity(m.foundIdentity) : 'no disk identity (not a disk)'}; expected ${describeIdentity(m.expected)}`,
    `    ${m.candidate ? `fits by identity: ${show(m.candidate)}` : 'no scanned disk fits by identity'}${m.linkWorks ? ' (another stored path still finds it)' : ''}`,
  ]);
  section(out, 'stale links (parent found by identity, not by its stored paths)', r.staleLinks, (s) => [
    `${show(s.child)} -> ${show(s.parent)}${s.alternatives.length ? ` (copies: ${s.alternatives.map(show).join(', ')})` : ''}`,
    ...s.targets.map((t) => `    stored ${t.key}: ${t.stored}  ->  ${t.path} (${t.state})`),
  ]);
  section(out, 'dirty logs', r.dirtyLogs, (d) => [`${show(d.path)}: ${d.message}`]);
  section(out, 'problems', r.problems, (p) => [`${show(p.path)}: ${p.code}: ${p.message}${p.offset !== undefined && !p.message.includes(`offset ${p.offset}`) ? ` (offset ${p.offset})` : ''}`]);
  section(out, 'cycles (not followed)', r.cycles, (c) => [c.paths.map(show).join(' -> ') + ' -> (back to the first)']);
  out.push('', 'recovery plan (read-only so far: nothing has been changed; run these yourself):');
  r.plan.forEach((p, i) => {
    out.push('', `# tree ${i + 1}: ${p.root}`);
    for (const n of p.notes) out.push(`# ${n}`);
    for (const [j, c] of p.commands.entries()) out.push(`#   ${p.steps[j]!.reason}`, c);
    if (p.result && p.steps.length > 0) out.push(`# then ${p.result} holds the newest state (${show(r.trees[i]!.newestLeaf)}) as one standalone disk`);
  });
  const s = r.summary;
  out.push('', s.consistent ? `consistent${s.staleLinks ? ` (${s.staleLinks} stale link(s) to re-point)` : ''}` : `findings: ${s.orphans} orphan(s), ${s.identityMismatches} identity mismatch(es), ${s.problems} problem(s), ${s.cycles} cycle(s)`);
  process.stdout.write(out.join('\n') + '\n');
}

function drawTree(t: ScanTree, n: number, show: (p: string) => string): string[] {
  const lines = [`tree ${n}: ${t.format.toUpperCase()}, ${t.nodes.length} disk(s), ${short(t.bytes)} on disk${t.complete ? '' : ' — INCOMPLETE (base missing or cycle)'}`];
  const byPath = new Map(t.nodes.map((x) => [x.path, x]));
  const newest = t.leaves.find((l) => l.newest)?.path;
  const draw = (path: string, prefix: string, last: boolean, top: boolean): void => {
    const node = byPath.get(path)!;
    const facts = `${node.type}, ${short(node.virtualSize)} virtual, ${short(node.fileSize)} file, ${short(node.allocatedBytes)} allocated, ${node.mtime.replace('T', ' ').slice(0, 19)} UTC`;
    const marks = [node.dirtyLog ? 'dirty log' : '', node.duplicateOf ? `copy of ${show(node.duplicateOf)}` : '', path === newest ? '<== newest leaf: likely the most recent state' : ''].filter(Boolean);
    lines.push(`  ${prefix}${top ? '' : last ? '└─ ' : '├─ '}${show(path)}  [${facts}]${marks.length ? '  ' + marks.join('; ') : ''}`);
    const next = top ? '' : prefix + (last ? '   ' : '│  ');
    node.children.forEach((c, i) => draw(c, next, i === node.children.length - 1, false));
  };
  draw(t.root, '', true, true);
  return lines;
}

function section<T>(out: string[], title: string, items: T[], lines: (item: T) => string[]): void {
  if (items.length === 0) return;
  out.push('', `${title}:`);
  for (const item of items) out.push(...lines(item).map((l) => `  ${l}`));
}

function short(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
}
