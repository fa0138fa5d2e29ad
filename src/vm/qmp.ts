/**
 * A QMP client (QEMU's docs/interop/qmp-spec.rst). Opening: the server sends its greeting
 * `{"QMP": {"version", "capabilities"}}` (§2.2), the client answers `qmp_capabilities` to leave
 * capabilities negotiation mode (§4), and only then are other commands accepted. Commands carry ids
 * and may be pipelined; events arrive at any time and are handed to listeners, to waitForEvent, or
 * to an events() iterator.
 *
 * A QMP monitor serves one client at a time: a second connection waits until the first closes.
 */
import { DiskchainError } from '../io/errors.js';
import { QapiChannel, type CallOptions, type QapiMessage } from './qapi-channel.js';
import type { QmpCommands, QmpEvent, VersionInfo } from './qmp-schema.js';

export interface QmpGreeting {
  version: VersionInfo;
  capabilities: string[];
}

type ArgsOf<K extends keyof QmpCommands> = QmpCommands[K]['args'];
type EventListener = (event: QmpEvent) => void;

/** Events an events() iterator keeps before its reader takes them; older ones are dropped beyond this. */
const EVENT_QUEUE_LIMIT = 1024;

export class QmpClient {
  private readonly listeners = new Set<EventListener>();
  private readonly closeListeners = new Set<(reason: DiskchainError) => void>();

  private constructor(
    private readonly channel: QapiChannel,
    readonly greeting: QmpGreeting,
  ) {
    channel.onMessage = (m) => this.receive(m);
    void channel.closed.then((reason) => {
      for (const listener of [...this.closeListeners]) listener(reason);
    });
  }

  /**
   * Connects to a QMP unix socket, reads the greeting and negotiates capabilities. `timeoutMs`
   * bounds the whole opening (default 10 s).
   */
  static async connect(socketPath: string, options: CallOptions = {}): Promise<QmpClient> {
    const timeoutMs = options.timeoutMs ?? 10_000;
    const deadline = Date.now() + timeoutMs;
    const channel = await QapiChannel.open(socketPath, 'QMP', { ...options, timeoutMs });
    try {
      const greeting = await readGreeting(channel, Math.max(1, deadline - Date.now()));
      const client = new QmpClient(channel, greeting);
      await channel.call('qmp_capabilities', undefined, { ...options, timeoutMs: Math.max(1, deadline - Date.now()) });
      return client;
    } catch (e) {
      await channel.close();
      throw e;
    }
  }

  get version(): VersionInfo['qemu'] {
    return this.greeting.version.qemu;
  }

  /** Settles, with a QMP_CLOSED error as the reason, when the connection ends (QEMU exited, or close()). */
  get closed(): Promise<DiskchainError> {
    return this.channel.closed;
  }

  get isClosed(): boolean {
    return this.channel.isClosed;
  }

  /** Runs one command from the typed list; rejects with QMP_ERROR, TIMEOUT, QMP_CLOSED or ABORTED. */
  execute<K extends keyof QmpCommands>(command: K, ...rest: ArgsOf<K> extends undefined ? [args?: undefined, options?: CallOptions] : [args: ArgsOf<K>, options?: CallOptions]): Promise<QmpCommands[K]['ret']> {
    const [args, options] = rest;
    return this.channel.call(command, args as Record<string, unknown> | undefined, options) as Promise<QmpCommands[K]['ret']>;
  }

  /** Runs any command (for those not in the typed list). */
  executeUntyped(command: string, args?: Record<string, unknown>, options?: CallOptions): Promise<unknown> {
    return this.channel.call(command, args, options);
  }

  /** Calls `listener` for every event from now on; returns the function that stops it. */
  onEvent(listener: EventListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Resolves with the next event named `name` (and accepted by `match`) that arrives after this
   * call: start waiting before sending the command that causes it.
   */
  waitForEvent<D = Record<string, unknown>>(name: string, options: CallOptions & { match?: (event: QmpEvent<D>) => boolean } = {}): Promise<QmpEvent<D>> {
    const timeoutMs = options.timeoutMs ?? 30_000;
    return new Promise((resolve, reject) => {
      const finish = (error: Error | undefined, event?: QmpEvent<D>): void => {
        stop();
        this.closeListeners.delete(finish);
        clearTimeout(timer);
        options.signal?.removeEventListener('abort', onAbort);
        if (error) reject(error);
        else resolve(event!);
      };
      const stop = this.onEvent((event) => {
        const typed = event as QmpEvent<D>;
        if (event.event === name && (!options.match || options.match(typed))) finish(undefined, typed);
      });
      const timer = setTimeout(() => finish(new DiskchainError('TIMEOUT', `QMP: no ${name} event after ${timeoutMs} ms`, { event: name, timeoutMs })), timeoutMs);
      const onAbort = (): void => finish(new DiskchainError('ABORTED', `QMP: waiting for ${name} cancelled`));
      options.signal?.addEventListener('abort', onAbort, { once: true });
      if (this.channel.isClosed) void this.channel.closed.then((reason) => finish(reason));
      else this.closeListeners.add(finish);
      if (options.signal?.aborted) onAbort();
    });
  }

  /**
   * Every event from now on (from this call, not from the first next()), in order, until the
   * connection closes or `signal` fires. Events are queued while the reader is busy (at most 1024;
   * the oldest are dropped beyond that).
   */
  events(options: { signal?: AbortSignal } = {}): AsyncIterableIterator<QmpEvent> {
    const queue: QmpEvent[] = [];
    let wake: (() => void) | undefined;
    let ended = this.channel.isClosed || options.signal?.aborted === true;
    const stopEvents = this.onEvent((event) => {
      if (queue.length >= EVENT_QUEUE_LIMIT) queue.shift();
      queue.push(event);
      wake?.();
    });
    const end = (): void => {
      ended = true;
      stopEvents();
      this.closeListeners.delete(end);
      options.signal?.removeEventListener('abort', end);
      wake?.();
    };
    this.closeListeners.add(end);
    options.signal?.addEventListener('abort', end, { once: true });
    const done = { done: true, value: undefined } as const;
    const iterator: AsyncIterableIterator<QmpEvent> = {
      next: async () => {
        while (queue.length === 0 && !ended) await new Promise<void>((resolve) => (wake = resolve));
        wake = undefined;
        return queue.length > 0 ? { done: false, value: queue.shift()! } : done;
      },
      return: async () => {
        end();
        queue.length = 0;
        return done;
      },
      [Symbol.asyncIterator]: () => iterator,
    };
    return iterator;
  }

  close(): Promise<void> {
    return this.channel.close();
  }

  private receive(message: QapiMessage): void {
    if (typeof message.event !== 'string') return; // a stale answer to a command that timed out
    const event: QmpEvent = {
      event: message.event,
      data: (message.data ?? {}) as Record<string, unknown>,
      timestamp: (message.timestamp ?? { seconds: 0, microseconds: 0 }) as QmpEvent['timestamp'],
    };
    for (const listener of [...this.listeners]) listener(event);
  }
}

function readGreeting(channel: QapiChannel, timeoutMs: number): Promise<QmpGreeting> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => finish(new DiskchainError('TIMEOUT', `${channel.what}: no greeting after ${timeoutMs} ms`)), timeoutMs);
    let done = false;
    const finish = (error: Error | undefined, greeting?: QmpGreeting): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      channel.onMessage = () => {};
      if (error) reject(error);
      else resolve(greeting!);
    };
    channel.onMessage = (m) => {
      const qmp = m.QMP as { version?: VersionInfo; capabilities?: unknown } | undefined;
      if (!qmp || typeof qmp.version?.qemu?.major !== 'number') {
        finish(new DiskchainError('QMP_ERROR', `${channel.what}: expected the QMP greeting, got ${JSON.stringify(m).slice(0, 200)}`));
        return;
      }
      finish(undefined, { version: qmp.version, capabilities: Array.isArray(qmp.capabilities) ? qmp.capabilities.map(String) : [] });
    };
    void channel.closed.then((reason) => finish(reason));
  });
}
