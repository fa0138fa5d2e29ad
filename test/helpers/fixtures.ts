import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';

/**
 * The real, Microsoft- and QEMU-made images vendored in test/fixtures/real/ (gzip), see its NOTICE.
 * `realFixture(name)` decompresses one into a cache directory once, checks its size and SHA-256
 * against manifest.json (made by scripts/vendor-fixtures.mjs), and returns the path of a read-only copy.
 * Tests that change a fixture copy it first.
 */

/** test/fixtures/real/ in the source tree (this file runs from dist/test/helpers/). */
export const REAL_FIXTURES_DIR = new URL('../../../test/fixtures/real/', import.meta.url).pathname;

/** What independent readers gave for an image (qemu-img, cross-checked with pyvhdi); see the NOTICE. */
export interface FixtureExpected {
  format: 'VHD' | 'VHDX';
  diskType: string;
  virtualSize: number;
  blockSize: number | null;
  logicalSectorSize: number;
  physicalSectorSize: number;
  creator: string;
  logReplayRequired: boolean;
  contentSha256: string | null;
  contentSha256WithoutLogReplay?: string;
  contentSha256OverZeroParent?: string;
  /** What qemu-img reads with default options, where it differs from the virtual size. */
  qemuDefaultSizeRead?: { size: number; sha256: string; why: string };
  vhd?: { uniqueId: string; geometry: { cylinders: number; heads: number; sectorsPerTrack: number }; allocatedBlocks?: number };
  parent: { parentUniqueId: string; parentUnicodeName: string; locators: Array<{ platformCode: string; value: string }> } | null;
  dataExtents?: Array<[number, number]>;
}

export interface FixtureEntry {
  name: string;
  /** Size and SHA-256 of the decompressed image. */
  size: number;
  sha256: string;
  source: { repo: string; path: string; commit: string; licence: string; madeBy: string; retrievedVia?: string };
  expected: FixtureExpected;
}

let manifest: FixtureEntry[] | undefined;

export function realFixtures(): FixtureEntry[] {
  manifest ??= JSON.parse(readFileSync(join(REAL_FIXTURES_DIR, 'manifest.json'), 'utf8')) as FixtureEntry[];
  return manifest;
}

/** Where decompressed images are kept between runs: DISKCHAIN_FIXTURE_CACHE, or one per user under the temp dir. */
function cacheRoot(): string {
  return process.env.DISKCHAIN_FIXTURE_CACHE ?? join(tmpdir(), `diskchain-fixtures-${userInfo().uid}`);
}

const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');
const verified = new Map<string, string>();

/** The path of a verified, read-only, decompressed copy of the vendored image `name`. */
export function realFixture(name: string): string {
  const known = verified.get(name);
  if (known) return known;
  const entry = realFixtures().find((e) => e.name === name);
  if (!entry) throw new Error(`${name} is not listed in ${REAL_FIXTURES_DIR}manifest.json`);
  // Keyed by content hash: a changed manifest never meets a stale copy, and the name stays the image's own.
  const dir = join(cacheRoot(), entry.sha256);
  const path = join(dir, name);
  if (!(existsSync(path) && matches(readFileSync(path), entry))) {
    const image = gunzipSync(readFileSync(join(REAL_FIXTURES_DIR, `${name}.gz`)));
    if (!matches(image, entry)) throw new Error(`${REAL_FIXTURES_DIR}${name}.gz does not decompress to the size and sha256 in manifest.json: a damaged checkout?`);
    mkdirSync(dir, { recursive: true });
    // Another test process may be doing the same: each writes its own temporary name, the rename is atomic.
    const tmp = `${path}.${process.pid}.tmp`;
    writeFileSync(tmp, image, { mode: 0o444 });
    renameSync(tmp, path);
  }
  chmodSync(path, 0o444);
  verified.set(name, path);
  return path;
}

function matches(bytes: Uint8Array, entry: FixtureEntry): boolean {
  return bytes.length === entry.size && sha256(bytes) === entry.sha256;
}
