/**
 * What changes files, as events: the writes, resizes and flushes of every writable FileSource, and the
 * creations, renames, hard links, removals and folder flushes that go through durable.ts (its
 * synchronous writeFileAtomicSync too), and the files other processes wrote that durable.ts makes durable. Nothing listens by
 * default (one check per call); a test installs a listener to build a power-cut model of an operation
 * (docs/crash-safety.md). A listener runs synchronously, before the change is made (a flush: when it
 * starts and when it has returned), and must copy any bytes it keeps.
 */
export type FileEvent =
  /** A FileSource opened for writing; `created` when it made the file. `file` numbers the open. */
  | { kind: 'open'; file: number; path: string; created: boolean }
  | { kind: 'write'; file: number; offset: number; data: Uint8Array }
  | { kind: 'truncate'; file: number; length: number }
  | { kind: 'flush-start'; file: number }
  | { kind: 'flush-done'; file: number }
  /** A file made durable as it stands (fsync through a read-only open): its data and its times. */
  | { kind: 'sync-file'; path: string }
  | { kind: 'rename'; from: string; to: string }
  /** A second name for an existing file (a hard link). */
  | { kind: 'link'; from: string; to: string }
  /**
   * A file another process (QEMU) created and wrote, reported once it is complete, just before it is
   * made durable: `data` is its whole content.
   */
  | { kind: 'written'; path: string; data: Uint8Array }
  | { kind: 'remove'; path: string }
  | { kind: 'sync-folder'; folder: string };

export type FileEventListener = (event: FileEvent) => void;

let listener: FileEventListener | undefined;
let lastFile = 0;

/** Numbers a writable open for its events (FileSource and durable.ts's synchronous writer share the count). */
export function nextFileId(): number {
  return ++lastFile;
}

/** Installs `next` (undefined: none); returns the listener it replaces. */
export function setFileEventListener(next: FileEventListener | undefined): FileEventListener | undefined {
  const previous = listener;
  listener = next;
  return previous;
}

/** The listener, if any: callers build an event only when one is installed. */
export function fileEventListener(): FileEventListener | undefined {
  return listener;
}
