import { FileSource } from '../io/file-source.js';
import { driverFor } from '../formats/registry.js';
import type { CreateOptions, FormatName, VirtualDisk } from '../formats/types.js';
import { createChild, type CreateChildOptions } from '../chain/create-child.js';

export { createChild, type CreateChildOptions };

/** Creates a new base disk (fixed or dynamic); refuses to replace an existing file. */
export async function createDisk(path: string, format: FormatName, options: CreateOptions): Promise<VirtualDisk> {
  const source = await FileSource.create(path);
  try {
    return await driverFor(format).create(source, options);
  } catch (e) {
    await source.close();
    throw e;
  }
}
