#!/usr/bin/env node
/**
 * Vendors the real, Microsoft- and QEMU-made disk images into test/fixtures/real/.
 *
 *   node scripts/vendor-fixtures.mjs [SOURCE_DIR]      (default ../shared/fixtures/real)
 *
 * SOURCE_DIR holds the images and their corpus manifest.json (one object per image: origin, licence,
 * and the values independent readers gave: contentSha256 from qemu-img, cross-checked with pyvhdi).
 * Writes, for every image the corpus lists:
 *   - <name>.gz      the image, gzip level 9 (deterministic: no name, no time in the gzip header);
 *   - manifest.json  name, size, sha256 of the decompressed image, source (repository, path, commit,
 *                    licence), and `expected`: the corpus's oracle values the tests assert;
 *   - NOTICE         where each image came from, at which commit, under which licence.
 * The tests decompress through test/helpers/fixtures.ts, which checks size and sha256.
 * Run it again after the corpus changes; it rewrites all three and removes images no longer listed.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const from = resolve(process.argv[2] ?? join(root, '..', 'shared', 'fixtures', 'real'));
const to = join(root, 'test', 'fixtures', 'real');

/** The oracle values the tests read; the rest of a corpus entry (tool output, prose) stays in the corpus. */
const EXPECTED = [
  'format', 'diskType', 'virtualSize', 'blockSize', 'logicalSectorSize', 'physicalSectorSize', 'creator',
  'logReplayRequired', 'contentSha256', 'contentSha256Source', 'contentSha256WithoutLogReplay',
  'contentSha256OverZeroParent', 'qemuDefaultSizeRead', 'vhd', 'vhdx', 'parent', 'dataExtents',
];

const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex');

const corpus = JSON.parse(readFileSync(join(from, 'manifest.json'), 'utf8'));
mkdirSync(to, { recursive: true });
const manifest = [];
for (const entry of corpus) {
  const image = readFileSync(join(from, entry.file));
  if (image.length !== entry.fileSize || sha256(image) !== entry.fileSha256) {
    throw new Error(`${entry.file}: size or sha256 differs from the corpus manifest; not vendoring a changed image`);
  }
  writeFileSync(join(to, `${entry.file}.gz`), gzipSync(image, { level: 9 }));
  const { repo, path, commit, retrievedVia } = entry.origin;
  const expected = Object.fromEntries(EXPECTED.filter((k) => entry[k] !== undefined).map((k) => [k, entry[k]]));
  manifest.push({ name: entry.file, size: image.length, sha256: entry.fileSha256, source: { repo, path, commit, ...(retrievedVia ? { retrievedVia } : {}), licence: entry.license, madeBy: entry.madeBy }, expected });
}
const listed = new Set(manifest.map((m) => `${m.name}.gz`));
for (const f of readdirSync(to)) if (f.endsWith('.gz') && !listed.has(f)) rmSync(join(to, f));
writeFileSync(join(to, 'manifest.json'), `${JSON.stringify(manifest, null, 1)}\n`);

const notice = [
  'Real-world VHD and VHDX test images',
  '',
  'These images were not made by diskchain. They were copied unchanged (decompressed, then gzipped here)',
  'from the public repositories below, and are used only by diskchain\'s tests. They are not part of the',
  'published package. Each stays under the licence of the repository it came from (those repositories do',
  'not license their test images separately). manifest.json gives the size and SHA-256 of each image.',
  '',
  ...manifest.flatMap((m) => [
    `${m.name}.gz`,
    `  source:  https://github.com/${m.source.repo} ${m.source.path}`,
    `  commit:  ${m.source.commit}`,
    ...(m.source.retrievedVia ? [`  bytes:   ${m.source.retrievedVia}`] : []),
    `  licence: ${m.source.licence}`,
    `  made by: ${m.source.madeBy}`,
    '',
  ]),
];
writeFileSync(join(to, 'NOTICE'), notice.join('\n'));
console.log(`vendored ${manifest.length} images into ${to}`);
