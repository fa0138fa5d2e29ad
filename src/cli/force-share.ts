/**
 * `-U, --force-share` for the commands that only read (as qemu-img's): read a file another process
 * (a diskchain writer, a running QEMU) is writing, taking and checking no lock (docs/locking.md).
 */
export const FORCE_SHARE_OPTION = [
  '-U, --force-share',
  'read even if another process (diskchain, a running VM) is writing the file: no lock is taken or checked, and what is read may be torn or change under you',
] as const;

/** The open options for a parsed --force-share; warns on stderr when it is given. */
export function forceShareOptions(opts: { forceShare?: boolean }): { forceShare?: true } {
  if (!opts.forceShare) return {};
  process.stderr.write('diskchain: warning: --force-share: reading without locks; if another process is writing these files, what is read may be inconsistent\n');
  return { forceShare: true };
}
