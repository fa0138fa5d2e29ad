/**
 * The stop of a long-running command (serve, console). Listen before announcing readiness: a
 * process with no SIGTERM listener dies by the signal's default action, so a script that stops the
 * server as soon as it reads the "listening" line would otherwise kill it before it flushes.
 */
export function untilStopSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const stop = (signal: NodeJS.Signals): void => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      resolve(signal);
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}
