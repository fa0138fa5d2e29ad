// Path confinement: every path a request names is resolved through symlinks (realpath) and must lie
// inside one of the roots the console was started with. A path to be created is confined by its folder.
import { lstat, realpath, stat } from 'node:fs/promises';
import { basename, dirname, isAbsolute, relative, resolve } from 'node:path';
import { DiskchainError } from '../api/index.js';

const MAX_PATH = 4096;

function inside(path: string, root: string): boolean {
  const rel = relative(root, path);
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
}

export class Roots {
  private constructor(readonly paths: string[]) {}

  /** Each root must be an existing folder; they are kept as real paths. */
  static async open(folders: string[]): Promise<Roots> {
    const paths: string[] = [];
    for (const f of folders) {
      const real = await realpath(f).catch(() => {
        throw new DiskchainError('INVALID_ARGUMENT', `root ${f} does not exist`, { file: f });
      });
      if (!(await stat(real)).isDirectory()) throw new DiskchainError('INVALID_ARGUMENT', `root ${f} is not a folder`, { file: f });
      if (!paths.includes(real)) paths.push(real);
    }
    if (paths.length === 0) throw new DiskchainError('INVALID_ARGUMENT', 'the console needs at least one root folder');
    return new Roots(paths);
  }

  /** Absolute paths as given; relative ones are taken from the first root. */
  private lexical(path: unknown): string {
    if (typeof path !== 'string' || path.length === 0 || path.length > MAX_PATH || path.includes('\0')) {
      throw new DiskchainError('INVALID_ARGUMENT', `a path must be a non-empty string of at most ${MAX_PATH} characters`);
    }
    return resolve(this.paths[0]!, path);
  }

  private refuse(path: string): never {
    throw new DiskchainError('PATH_NOT_ALLOWED', `path outside the console's roots (${this.paths.join(', ')})`, { file: path, roots: this.paths });
  }

  /** The real path of an existing file or folder inside the roots. */
  async existing(path: unknown): Promise<string> {
    const abs = this.lexical(path);
    const real = await realpath(abs).catch((e: NodeJS.ErrnoException) => {
      // A missing path outside the roots is reported as outside, so no probing of the rest of the machine.
      if (!this.paths.some((r) => inside(abs, r))) this.refuse(abs);
      throw new DiskchainError('NOT_FOUND', 'no such file or folder', { file: abs, errno: e.code });
    });
    if (!this.paths.some((r) => inside(real, r))) this.refuse(abs);
    return real;
  }

  /** A path that does not exist yet, whose folder is inside the roots: the folder's real path plus the name. */
  async fresh(path: unknown): Promise<string> {
    const abs = this.lexical(path);
    const name = basename(abs);
    if (name === '' || name === '.' || name === '..') throw new DiskchainError('INVALID_ARGUMENT', 'the path does not end in a file name', { file: abs });
    const folder = await this.existing(dirname(abs));
    const target = resolve(folder, name);
    if (await lstat(target).catch(() => undefined)) throw new DiskchainError('EXISTS', `${target} already exists: pick a new name`, { file: target });
    return target;
  }

  /** The root that holds a real path. */
  rootOf(real: string): string | undefined {
    return this.paths.find((r) => inside(real, r));
  }
}
