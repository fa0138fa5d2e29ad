import { FileSource } from '../io/file-source.js';
import { isDiskchainError } from '../io/errors.js';
import { detectFormat } from '../formats/registry.js';
import type { Finding } from '../formats/types.js';
import { openDisk } from '../chain/open-chain.js';
import { parentInfo } from './info.js';

export interface CheckReport {
  path: string;
  format: string | null;
  findings: Finding[];
  /** True when no finding is an error or a warning. */
  clean: boolean;
}

/** Structural validation of one file, plus the state of its parent link. Never writes. */
export async function checkDisk(path: string): Promise<CheckReport> {
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
      const disk = await openDisk(path);
      const parent = await parentInfo(disk).finally(() => disk.close());
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
  return { path, format, findings, clean: !findings.some((f) => f.severity !== 'info') };
}
