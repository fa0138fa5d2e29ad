import { FileSource } from '../io/file-source.js';
import { isDiskchainError } from '../io/errors.js';
import { detectFormat, driverFor } from '../formats/registry.js';
import type { Finding, FormatName } from '../formats/types.js';
import { openDisk } from '../chain/open-chain.js';
import { parentInfo, type ParentSearch } from './info.js';

export interface CheckReport {
  path: string;
  format: string | null;
  findings: Finding[];
  /** True when no finding is an error or a warning. */
  clean: boolean;
}

/** Structural validation of one file, plus the state of its parent link (found as info finds it). Never writes. */
export async function checkDisk(path: string, options: ParentSearch & { format?: FormatName } = {}): Promise<CheckReport> {
  const source = await FileSource.open(path);
  let format: string | null = null;
  const findings: Finding[] = [];
  try {
    const driver = options.format ? driverFor(options.format) : await detectFormat(source);
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
      const disk = await openDisk(path, options.format ? { format: options.format } : {});
      const parent = await parentInfo(disk, options).finally(() => disk.close());
      if (parent && parent.found === null) {
        // Not found (or only outside the allowed folders) may be a matter of --search-path; a cycle or a parent of another format is damage.
        const code = parent.problem?.code ?? 'PARENT_NOT_FOUND';
        const severity = code === 'PARENT_NOT_FOUND' || code === 'PATH_NOT_ALLOWED' ? 'warning' : 'error';
        findings.push({ severity, code, message: parent.problem?.message ?? `parent not found (tried ${parent.attempts.map((a) => a.tried).join(', ')})`, file: path });
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
