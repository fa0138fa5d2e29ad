import { openChain } from '../../src/chain/open-chain.js';

/** Opens `leaf` and its parents (read-only unless asked: a VHDX log is then replayed in memory) and reads the whole disk. */
export async function readChain(leaf: string, writable = false): Promise<Uint8Array> {
  const chain = await openChain(leaf, { writable });
  try {
    const out = new Uint8Array(chain.virtualSize);
    await chain.read(out, 0);
    return out;
  } finally {
    await chain.close();
  }
}
