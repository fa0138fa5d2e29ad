/**
 * The test guest (scripts/build-guest.sh): built on first use, its disk records parsed, and booted
 * under QEMU with a serial log to watch. The layout of what the guest writes is documented in the
 * script's header and in docs/test-guest.md; GUEST_LAYOUT below is the same layout.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { QemuDisk } from '../../src/vm/qemu-command.js';
import { QemuProcess } from '../../src/vm/qemu-process.js';
import { requireOracle } from './oracles.js';

export const REPO_ROOT = new URL('../../../', import.meta.url).pathname;
const BUILD_SCRIPT = join(REPO_ROOT, 'scripts/build-guest.sh');

/** Where the guest writes on /dev/vda (512-byte sectors). */
export const GUEST_LAYOUT = {
  sector: 512,
  bootLba: 0,
  tickLba: 1,
  ringLba: 256,
  ringSlots: 256,
  /** The guest never writes past LBA 511. */
  minDiskBytes: 512 * 512,
} as const;

export interface GuestImage {
  kernel: string;
  initrd: string;
  kernelVersion: string;
}

export interface GuestBootRecord {
  boots: number;
  id: string;
}

export interface GuestTick extends GuestBootRecord {
  tick: number;
}

export interface GuestDiskView {
  boot?: GuestBootRecord;
  latest?: GuestTick;
  /** Every record in the ring, by tick. */
  ring: GuestTick[];
}

let building: Promise<GuestImage> | undefined;

/** Runs scripts/build-guest.sh once per process (it is cached on disk: a second run takes milliseconds). */
export function buildGuest(): Promise<GuestImage> {
  building ??= new Promise((resolve, reject) => {
    execFile('bash', [BUILD_SCRIPT], { timeout: 300_000, maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (error) {
        reject(new Error(`scripts/build-guest.sh failed: ${error.message}\n${stderr}`));
        return;
      }
      const field = (name: string): string => {
        const m = new RegExp(`^${name}=(.*)$`, 'm').exec(stdout);
        if (!m) throw new Error(`scripts/build-guest.sh printed no ${name}=: ${stdout}`);
        return m[1]!;
      };
      resolve({ kernel: field('kernel'), initrd: field('initrd'), kernelVersion: field('kernel-version') });
    });
  });
  return building;
}

/**
 * The guest image, or undefined when the test is skipped. QEMU missing or the guest failing to
 * build fails the test in CI (CI=true) and skips it loudly elsewhere.
 */
export async function requireGuest(t: TestContext): Promise<GuestImage | undefined> {
  if (!requireOracle(t, 'qemu-system-x86_64')) return undefined;
  try {
    return await buildGuest();
  } catch (e) {
    const msg = `the test guest cannot be built: ${(e as Error).message}`;
    if (process.env.CI === 'true') throw new Error(`${msg}; CI must build it`);
    console.error(`SKIPPED LOUDLY: ${msg}`);
    t.skip(msg);
    return undefined;
  }
}

function parseRecord(sector: Uint8Array): { kind: 'boot'; record: GuestBootRecord } | { kind: 'tick'; record: GuestTick } | undefined {
  const text = Buffer.from(sector).toString('latin1');
  const line = text.slice(0, text.indexOf('\n') >= 0 ? text.indexOf('\n') : text.length).trimEnd();
  let m = /^DCGUEST1 boots=(\d+) id=([0-9a-f]{16})$/.exec(line);
  if (m) return { kind: 'boot', record: { boots: Number(m[1]), id: m[2]! } };
  m = /^DCTICK1 boots=(\d+) id=([0-9a-f]{16}) tick=(\d+)$/.exec(line);
  if (m) return { kind: 'tick', record: { boots: Number(m[1]), id: m[2]!, tick: Number(m[3]) } };
  return undefined;
}

/** Parses the guest's records from the first 256 KiB of its disk. */
export function parseGuestDisk(bytes: Uint8Array): GuestDiskView {
  const { sector, bootLba, tickLba, ringLba, ringSlots } = GUEST_LAYOUT;
  if (bytes.length < (ringLba + ringSlots) * sector) throw new Error(`the guest's disk view needs ${(ringLba + ringSlots) * sector} bytes, got ${bytes.length}`);
  const at = (lba: number) => parseRecord(bytes.subarray(lba * sector, (lba + 1) * sector));
  const view: GuestDiskView = { ring: [] };
  const boot = at(bootLba);
  if (boot?.kind === 'boot') view.boot = boot.record;
  const latest = at(tickLba);
  if (latest?.kind === 'tick') view.latest = latest.record;
  for (let slot = 0; slot < ringSlots; slot++) {
    const r = at(ringLba + slot);
    if (r?.kind === 'tick') view.ring.push(r.record);
  }
  view.ring.sort((a, b) => a.tick - b.tick);
  return view;
}

/** Reads and parses the records from a raw disk file. */
export async function readGuestDisk(path: string): Promise<GuestDiskView> {
  const bytes = new Uint8Array(GUEST_LAYOUT.minDiskBytes);
  const handle = await open(path, 'r');
  try {
    await handle.read(bytes, 0, bytes.length, 0);
  } finally {
    await handle.close();
  }
  return parseGuestDisk(bytes);
}

/** Parses the guest's records from any disk that reads (a chain), then closes it. */
export async function readGuestView(disk: { read(target: Uint8Array, offset: number): Promise<void>; close(): Promise<void> }): Promise<GuestDiskView> {
  try {
    const bytes = new Uint8Array(GUEST_LAYOUT.minDiskBytes);
    await disk.read(bytes, 0);
    return parseGuestDisk(bytes);
  } finally {
    await disk.close();
  }
}

/** A sparse raw file of `bytes` bytes. */
export async function makeRawDisk(path: string, bytes: number): Promise<string> {
  await writeFile(path, '');
  const handle = await open(path, 'r+');
  await handle.truncate(bytes);
  await handle.close();
  return path;
}

/** A folder under the system's temp folder, removed by the returned function. */
export async function tempFolder(prefix = 'diskchain-vm-'): Promise<{ dir: string; remove: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}

/** The guest's serial console as QEMU writes it to a file. */
export class SerialLog {
  constructor(readonly path: string) {}

  async text(): Promise<string> {
    try {
      return await readFile(this.path, 'latin1');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return '';
      throw e;
    }
  }

  /** Polls the log until `pattern` matches (searching from byte `from`); fails after `timeoutMs`. */
  async waitFor(pattern: RegExp, timeoutMs: number, from = 0): Promise<RegExpExecArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const text = await this.text();
      const m = pattern.exec(text.slice(from));
      if (m) return m;
      if (Date.now() > deadline) throw new Error(`serial log ${this.path}: no ${pattern} after ${timeoutMs} ms; it ends with:\n${text.slice(-2000)}`);
      await sleep(50);
    }
  }

  /** The counter values the guest printed, in order. */
  async ticks(): Promise<number[]> {
    return [...(await this.text()).matchAll(/diskchain-guest: tick (\d+)/g)].map((m) => Number(m[1]));
  }
}

export interface GuestVmOptions {
  image: GuestImage;
  /** Sockets and the serial log go here. */
  dir: string;
  /** Distinguishes several VMs in one folder (file names). */
  name?: string;
  disks: QemuDisk[];
  /** Adds the guest agent's virtio-serial port. */
  agent?: boolean;
  /** Start waiting for a state (-incoming defer) instead of booting. */
  incoming?: boolean;
  memoryMiB?: number;
}

/** QEMUs started by GuestVm still running: killed if the test process exits without stopping them. */
const running = new Set<QemuProcess>();
process.on('exit', () => {
  for (const qemu of running) {
    try {
      process.kill(qemu.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
});

/** The guest running under QEMU. */
export class GuestVm {
  private constructor(
    readonly qemu: QemuProcess,
    readonly serial: SerialLog,
    readonly agentSocket: string | undefined,
  ) {}

  static async start(options: GuestVmOptions): Promise<GuestVm> {
    const name = options.name ?? 'vm';
    const serialLog = join(options.dir, `${name}.serial.log`);
    await rm(serialLog, { force: true });
    const agentSocket = options.agent ? join(options.dir, `${name}.qga.sock`) : undefined;
    const qemu = await QemuProcess.start({
      name: `diskchain-test-${name}`,
      memoryMiB: options.memoryMiB ?? 256,
      boot: { kind: 'kernel', kernel: options.image.kernel, initrd: options.image.initrd, append: 'console=ttyS0 panic=-1' },
      disks: options.disks,
      qmpSocket: join(options.dir, `${name}.qmp.sock`),
      serialLog,
      ...(agentSocket ? { guestAgentSocket: agentSocket } : {}),
      ...(options.incoming ? { incoming: 'defer' as const } : {}),
    });
    running.add(qemu);
    void qemu.exited.then(() => running.delete(qemu));
    return new GuestVm(qemu, new SerialLog(serialLog), agentSocket);
  }

  /** Waits for the guest's "ready" line (module loading done, boot record written). */
  async ready(timeoutMs = 60_000): Promise<{ boots: number; id: string; agent: boolean; data: boolean }> {
    const m = await this.serial.waitFor(/diskchain-guest: ready boots=(\d+) id=([0-9a-f]+) agent=(yes|no) data=(yes|no)/, timeoutMs);
    return { boots: Number(m[1]), id: m[2]!, agent: m[3] === 'yes', data: m[4] === 'yes' };
  }

  /** Waits until the guest has printed a tick of at least `min`; resolves with the last one printed. */
  async tickAtLeast(min: number, timeoutMs = 30_000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const ticks = await this.serial.ticks();
      const last = ticks.at(-1) ?? 0;
      if (last >= min) return last;
      if (this.qemu.exit) throw new Error(`QEMU exited (${JSON.stringify(this.qemu.exit)}) before tick ${min}: ${this.qemu.stderrTail}`);
      if (Date.now() > deadline) throw new Error(`no tick ${min} after ${timeoutMs} ms (last ${last})`);
      await sleep(50);
    }
  }

  /** quit over QMP, SIGKILL if needed. */
  async stop(): Promise<void> {
    await this.qemu.stop(5000);
  }
}

/** Polls `read` until `accept` says yes; resolves with the accepted value. */
export async function pollUntil<T>(read: () => Promise<T>, accept: (value: T) => boolean, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (accept(value)) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not reached after ${timeoutMs} ms (last ${JSON.stringify(value)})`);
    await sleep(50);
  }
}

/** The size of a file, or 0 when it does not exist. */
export async function fileSize(path: string): Promise<number> {
  try {
    return (await stat(path)).size;
  } catch {
    return 0;
  }
}
