/**
 * A client for qemu-guest-agent (QEMU's qga/qapi-schema.json), reached through the host end of the
 * guest's virtio-serial port `org.qemu.guest_agent.0` (a QEMU chardev socket). The agent speaks the
 * QMP wire protocol without greeting or events, and serves one command at a time.
 *
 * The host end stays open when the agent is not (yet) running, and answers meant for an earlier
 * client may still be in the pipe, so every connection starts with `guest-sync-delimited`
 * (qga-ref: the agent sends 0xFF then `{"return": id}`): messages before the answer carrying our
 * random id are discarded. A command that times out leaves the stream unsynchronised; the next
 * command synchronises again first.
 *
 * Production checkpoints use guest-fsfreeze-freeze / guest-fsfreeze-thaw: while frozen, the guest's
 * file systems have flushed everything and block new writes.
 */
import { randomInt } from 'node:crypto';
import { DiskchainError } from '../io/errors.js';
import { QapiChannel, type CallOptions } from './qapi-channel.js';

/** qga/qapi-schema.json GuestFsfreezeStatus. */
export type GuestFsfreezeStatus = 'thawed' | 'frozen';

export class GuestAgentClient {
  private queue: Promise<unknown> = Promise.resolve();
  private synchronised = false;

  private constructor(private readonly channel: QapiChannel) {}

  /**
   * Connects and synchronises. Fails with TIMEOUT when the agent does not answer within
   * `timeoutMs` (default 10 s): the guest runs no agent, or has not started it yet.
   */
  static async connect(socketPath: string, options: CallOptions = {}): Promise<GuestAgentClient> {
    const timeoutMs = options.timeoutMs ?? 10_000;
    const deadline = Date.now() + timeoutMs;
    const channel = await QapiChannel.open(socketPath, 'guest agent', options);
    const client = new GuestAgentClient(channel);
    try {
      await client.sync({ ...options, timeoutMs: Math.max(1, deadline - Date.now()) });
      return client;
    } catch (e) {
      await channel.close();
      throw e;
    }
  }

  get closed(): Promise<DiskchainError> {
    return this.channel.closed;
  }

  /** Runs one agent command (serialised behind any in progress). */
  execute(command: string, args?: Record<string, unknown>, options: CallOptions = {}): Promise<unknown> {
    const run = async (): Promise<unknown> => {
      if (!this.synchronised) await this.sync(options);
      try {
        return await this.channel.call(command, args, options);
      } catch (e) {
        if (e instanceof DiskchainError && (e.code === 'TIMEOUT' || e.code === 'ABORTED')) this.synchronised = false;
        throw e;
      }
    };
    const result = this.queue.then(run, run);
    this.queue = result.catch(() => undefined);
    return result;
  }

  async ping(options?: CallOptions): Promise<void> {
    await this.execute('guest-ping', undefined, options);
  }

  /** Freezes every freezable file system in the guest; resolves with how many it froze. */
  async fsfreezeFreeze(options?: CallOptions): Promise<number> {
    return Number(await this.execute('guest-fsfreeze-freeze', undefined, options));
  }

  /** Thaws them; resolves with how many it thawed. */
  async fsfreezeThaw(options?: CallOptions): Promise<number> {
    return Number(await this.execute('guest-fsfreeze-thaw', undefined, options));
  }

  async fsfreezeStatus(options?: CallOptions): Promise<GuestFsfreezeStatus> {
    const status = await this.execute('guest-fsfreeze-status', undefined, options);
    if (status !== 'thawed' && status !== 'frozen') throw new DiskchainError('QMP_ERROR', `guest agent: unexpected fsfreeze status ${JSON.stringify(status)}`);
    return status;
  }

  close(): Promise<void> {
    return this.channel.close();
  }

  /** Sends guest-sync-delimited with a fresh id once a second until the agent echoes it. */
  private async sync(options: CallOptions): Promise<void> {
    const timeoutMs = options.timeoutMs ?? 10_000;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const id = randomInt(1, 2 ** 31);
      const wait = Math.min(1000, deadline - Date.now());
      try {
        const echoed = await this.channel.call('guest-sync-delimited', { id }, { signal: options.signal, timeoutMs: Math.max(1, wait) });
        if (echoed === id) {
          this.synchronised = true;
          return;
        }
      } catch (e) {
        if (!(e instanceof DiskchainError && e.code === 'TIMEOUT')) throw e;
      }
      if (Date.now() >= deadline) throw new DiskchainError('TIMEOUT', `${this.channel.what}: the guest agent did not answer within ${timeoutMs} ms`, { timeoutMs });
    }
  }
}
