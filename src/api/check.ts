import { FileSource } from '../io/file-source.js';
import { lockFile } from '../io/lock.js';
import { isDiskchainError } from '../io/errors.js';
import { detectFormat } from '../formats/registry.js';
import type { Finding } from '../formats/types.js';
import { openDisk } from '../chain/open-chain.js';
import { parentInfo, pendingMergeInfo } from './info.js';

export interface CheckReport {
  path: string;
  format: string | null;
  findings: Finding[];
  /** True when no finding is an error or a warning. */
  clean: boolean;
}

/**
 * Structural validation of one file, plus the state of its parent link. Never writes. Holds a read
 * lock on the file throughout unless `forceShare` (a file being written would be checked torn).
 */
export async function checkDisk(path: string, options: { forceShare?: boolean } = {}): Promise<CheckReport> {
  const forceShare = options.forceShare ?? false;
  const lock = forceShare ? undefined : await lockFile(path, 'read');
  try {
    return await checkLocked(path, forceShare);
  } finally {
    await lock?.release();
  }
}

async function checkLocked(path: string, forceShare: boolean): Promise<CheckReport> {
  const source = await FileSource.open(path);
  let format: string | null = null;
  const findings: Finding[] = [];
  try {
    const driver = await detectFormat(source);
    format = driver.name;
    findings.push(...(await driver.check(source)));
  } catch (e) {
    if (!isDiskchainError(e)) throw e;
    findings.push({ severity: 'error', code: e.code, message: e.message, file: path, ...(e.details.offset !== undefined ? { offset: e.details.offset } : {}) });
  } finally {
    await source.close();
  }
  if (format && !findings.some((f) => f.severity === 'error')) {
    try {
      const disk = await openDisk(path, { forceShare });
      const parent = await parentInfo(disk, forceShare).finally(() => disk.close());
      if (parent && parent.found === null) {
        findings.push({ severity: 'warning', code: 'PARENT_NOT_FOUND', message: `parent not found (tried ${parent.attempts.map((a) => a.tried).join(', ')})`, file: path });
      } else if (parent && parent.identityMatches === false) {
        findings.push({ severity: 'error', code: 'PARENT_MISMATCH', message: `parent ${parent.found} does not carry the identity this disk recorded`, file: path });
      }
    } catch (e) {
      if (!isDiskchainError(e)) throw e;
      findings.push({ severity: 'error', code: e.code, message: e.message, file: path });
    }
  }
  const pending = await pendingMergeInfo(path);
  if (pending) findings.push({ severity: 'warning', code: 'MERGE_PENDING', message: `this file is reserved by a pending merge (as its ${pending.role}): ${pending.advice}`, file: path });
  return { path, format, findings, clean: !findings.some((f) => f.severity !== 'info') };
}
