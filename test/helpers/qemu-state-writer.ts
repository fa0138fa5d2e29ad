/**
 * A memory state written as QEMU writes one for a migration to `exec:cat > file` (vm/state-file.ts),
 * fed seeded bytes instead of a guest's memory, then made durable as saveState does once QEMU reports
 * the migration complete (syncWrittenFile): the power-cut tests of saved states run no QEMU.
 */
import { spawn } from 'node:child_process';
import { syncWrittenFile } from '../../src/io/durable.js';

export function qemuLikeWriter(data: Uint8Array): (file: string) => Promise<void> {
  return async (file) => {
    const cat = spawn('/bin/sh', ['-c', 'cat > "$0"', file], { stdio: ['pipe', 'ignore', 'inherit'] });
    const done = new Promise<void>((resolve, reject) => cat.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`cat exited with ${code}`)))));
    cat.stdin.end(data);
    await done;
    await syncWrittenFile(file);
  };
}
