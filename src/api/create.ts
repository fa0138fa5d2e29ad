import { createChild, type CreateChildOptions } from '../chain/create-child.js';
import { createDisk } from '../chain/open-disk.js';

export { createChild, createDisk, type CreateChildOptions };
