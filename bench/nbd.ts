/**
 * NBD cases of npm run bench: `diskchain serve` against `qemu-nbd` serving the same dynamic VHDX, with
 * the same clients, in the same run:
 *  - qemu-img convert from the export to a raw file (BENCH_SIZE_MIB; the target: ratio <= 1.1). Both
 *    servers run with no cache of their own beyond the page cache (qemu-nbd's default writeback and
 *    aio=threads); qemu-img writes the same output with the same flags on both sides.
 *  - random 4 KiB reads with fio's nbd engine (libnbd), at queue depth 1 and 16: IOPS and completion
 *    latency percentiles, as ratios diskchain / qemu-nbd (for latency, below 1 is better).
 *  - memory: each server's peak RSS over the convert runs, and diskchain's resident growth while one
 *    client keeps 256 x 32 MiB reads outstanding without reading a byte of the replies (the connection
 *    budget, 64 MiB by default, is what bounds it).
 * Each server starts once per case and the two are used alternately, the order turning every round.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { CMD, NbdClient } from '../test/helpers/nbd-client.js';
import type { Measure } from './merge.js';

export interface NbdBench {
  dir: string;
  cli: string;
  runs: number;
  sizeMiB: number;
  /** A dynamic VHDX made by qemu-img from the bench's raw source. */
  vhdx: string;
  measure: (cmd: string[]) => Measure;
  median: (xs: number[]) => number;
}

const TARGET_RATIO = 1.1;

interface Server {
  name: string;
  proc: ChildProcess;
  uri: string;
}

async function waitForSocket(path: string, proc: ChildProcess): Promise<void> {
  for (let i = 0; i < 200 && !existsSync(path); i++) {
    if (proc.exitCode !== null) throw new Error(`server exited with ${proc.exitCode}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function startServers(b: NbdBench): Promise<Server[]> {
  const ours = join(b.dir, 'diskchain.sock');
  const theirs = join(b.dir, 'qemu-nbd.sock');
  rmSync(ours, { force: true });
  rmSync(theirs, { force: true });
  const d = spawn('node', [b.cli, 'serve', b.vhdx, '--socket', ours, '--export-name', ''], { stdio: 'ignore' });
  const q = spawn('qemu-nbd', ['-r', '-f', 'vhdx', '-x', '', '--persistent', '--shared=16', `--socket=${theirs}`, b.vhdx], { stdio: 'ignore' });
  await Promise.all([waitForSocket(ours, d), waitForSocket(theirs, q)]);
  return [
    { name: 'diskchain', proc: d, uri: `nbd+unix:///?socket=${ours}` },
    { name: 'qemu-nbd', proc: q, uri: `nbd+unix:///?socket=${theirs}` },
  ];
}

async function stop(servers: Server[]): Promise<void> {
  await Promise.all(servers.map((s) => new Promise<void>((r) => (s.proc.exitCode !== null ? r() : (s.proc.once('exit', () => r()), s.proc.kill('SIGTERM'))))));
}

/** VmHWM (peak) and VmRSS of a process, in MiB. */
function rss(pid: number): { peak: number; now: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (key: string): number => Number(new RegExp(`${key}:\\s+(\\d+)`).exec(status)?.[1] ?? NaN);
  return { peak: kib('VmHWM') / 1024, now: kib('VmRSS') / 1024 };
}

interface FioResult {
  iops: number;
  p50: number;
  p99: number;
  p999: number;
}

function fio(uri: string, depth: number, seconds: number, sizeMiB: number): FioResult {
  const out = execFileSync('fio', ['--name=randread', '--ioengine=nbd', `--uri=${uri}`, '--rw=randread', '--bs=4k', `--iodepth=${depth}`, `--runtime=${seconds}`, '--time_based', `--size=${sizeMiB}M`, '--output-format=json'], { encoding: 'utf8' });
  const read = (JSON.parse(out.slice(out.indexOf('{'))) as { jobs: Array<{ read: { iops: number; clat_ns: { percentile: Record<string, number> } } }> }).jobs[0]!.read;
  const pct = read.clat_ns.percentile;
  return { iops: read.iops, p50: pct['50.000000']! / 1000, p99: pct['99.000000']! / 1000, p999: pct['99.900000']! / 1000 };
}

function fioHasNbd(): boolean {
  try {
    return execFileSync('fio', ['--enghelp'], { encoding: 'utf8' }).split('\n').some((l) => l.trim() === 'nbd');
  } catch {
    return false;
  }
}

export async function runNbdCases(b: NbdBench): Promise<void> {
  const servers = await startServers(b);
  try {
    // qemu-img convert from each export.
    const times: Record<string, number[]> = { diskchain: [], 'qemu-nbd': [] };
    const out = join(b.dir, 'nbd-out.raw');
    for (let i = 0; i < b.runs; i++) {
      for (let k = 0; k < servers.length; k++) {
        const s = servers[(i + k) % servers.length]!;
        rmSync(out, { force: true });
        times[s.name]!.push(b.measure(['qemu-img', 'convert', '-f', 'raw', '-O', 'raw', s.uri, out]).seconds);
      }
    }
    rmSync(out, { force: true });
    const t = b.median(times.diskchain!);
    const q = b.median(times['qemu-nbd']!);
    const peaks = servers.map((s) => `${s.name} ${rss(s.proc.pid!).peak.toFixed(0)} MiB`).join(', ');
    console.log(
      `${'NBD: qemu-img convert'.padEnd(22)} median: diskchain serve ${t.toFixed(2)}s qemu-nbd ${q.toFixed(2)}s ratio ${(t / q).toFixed(2)} (target <= ${TARGET_RATIO}) | ` +
        `best ${(Math.min(...times.diskchain!) / Math.min(...times['qemu-nbd']!)).toFixed(2)} | server peak memory: ${peaks}`,
    );

    // Random 4 KiB reads.
    if (!fioHasNbd()) console.log('NBD: random reads skipped: this fio has no nbd engine');
    else {
      for (const depth of [1, 16]) {
        const got: Record<string, FioResult[]> = { diskchain: [], 'qemu-nbd': [] };
        const rounds = Math.max(2, Math.min(3, b.runs));
        for (let i = 0; i < rounds; i++) {
          for (let k = 0; k < servers.length; k++) {
            const s = servers[(i + k) % servers.length]!;
            got[s.name]!.push(fio(s.uri, depth, 5, b.sizeMiB));
          }
        }
        const m = (name: string, key: keyof FioResult): number => b.median(got[name]!.map((r) => r[key]));
        const ratio = (key: keyof FioResult): string => (m('diskchain', key) / m('qemu-nbd', key)).toFixed(2);
        console.log(
          `${`NBD: 4K randread qd${depth}`.padEnd(22)} IOPS diskchain ${m('diskchain', 'iops').toFixed(0)} qemu-nbd ${m('qemu-nbd', 'iops').toFixed(0)} ratio ${ratio('iops')} | ` +
            `latency ratios p50 ${ratio('p50')} p99 ${ratio('p99')} p99.9 ${ratio('p999')} (diskchain p50 ${m('diskchain', 'p50').toFixed(0)} us, p99 ${m('diskchain', 'p99').toFixed(0)} us)`,
        );
      }
    }

    // A client that stops reading: what one connection makes the server hold.
    const ours = servers[0]!;
    const before = rss(ours.proc.pid!).now;
    const stalled = await NbdClient.connect(ours.uri.slice(ours.uri.indexOf('socket=') + 7));
    stalled.socket.pause();
    for (let i = 0; i < 256; i++) void stalled.request(CMD.READ, (i * 32 * 1024 * 1024) % Math.max(1, b.sizeMiB * 1024 * 1024 - 32 * 1024 * 1024), 32 * 1024 * 1024);
    await new Promise((r) => setTimeout(r, 3000));
    const during = rss(ours.proc.pid!).now;
    stalled.socket.destroy();
    console.log(`${'NBD: stalled client'.padEnd(22)} 256 x 32 MiB reads outstanding, replies unread: diskchain serve resident ${before.toFixed(0)} -> ${during.toFixed(0)} MiB (+${(during - before).toFixed(0)} MiB; the per-connection budget is 64 MiB)`);
  } finally {
    await stop(servers);
  }
}
