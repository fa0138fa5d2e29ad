import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { gunzipSync, gzipSync } from 'node:zlib';
import { REAL_FIXTURES_DIR, realFixtures } from './helpers/fixtures.js';
import { tempDir } from './helpers/vhdx-util.js';

const ROOT = new URL('../../', import.meta.url).pathname;

test('every vendored image is in manifest.json and the NOTICE, and every listed one is vendored', () => {
  const gz = readdirSync(REAL_FIXTURES_DIR).filter((f) => f.endsWith('.gz')).sort();
  const listed = realFixtures().map((e) => `${e.name}.gz`).sort();
  assert.deepEqual(gz, listed);
  assert.equal(listed.length, 10);
  const notice = readFileSync(join(REAL_FIXTURES_DIR, 'NOTICE'), 'utf8');
  for (const e of realFixtures()) {
    for (const fact of [`${e.name}.gz`, e.source.repo, e.source.path, e.source.commit, e.source.licence]) assert.ok(notice.includes(fact), `NOTICE lacks ${fact}`);
  }
});

test('a damaged vendored image is refused, not used', () => {
  const { dir, cleanup } = tempDir('fixtures-damaged');
  try {
    const copy = join(dir, 'test', 'fixtures', 'real');
    const helper = join(dir, 'dist', 'test', 'helpers');
    for (const d of [copy, helper]) mkdirSync(d, { recursive: true });
    copyFileSync(join(ROOT, 'dist', 'test', 'helpers', 'fixtures.js'), join(helper, 'fixtures.js'));
    copyFileSync(join(REAL_FIXTURES_DIR, 'manifest.json'), join(copy, 'manifest.json'));
    const name = 'win10-fixed-3M.vhd';
    const image = readFileSync(join(REAL_FIXTURES_DIR, `${name}.gz`));
    const run = (): ReturnType<typeof spawnSync> =>
      spawnSync(process.execPath, ['--input-type=module', '-e', `import { realFixture } from ${JSON.stringify(join(helper, 'fixtures.js'))}; console.log(realFixture(${JSON.stringify(name)}));`], {
        encoding: 'utf8', env: { ...process.env, DISKCHAIN_FIXTURE_CACHE: join(dir, 'cache') },
      });
    writeFileSync(join(copy, `${name}.gz`), image);
    const good = run();
    assert.equal(good.status, 0, String(good.stderr));
    // One byte of the image changed (recompressed, so gzip's own CRC is right): the sha256 check catches it.
    const bytes = gunzipSync(image);
    bytes[1000] ^= 1;
    writeFileSync(join(copy, `${name}.gz`), gzipSync(bytes));
    rmSync(join(dir, 'cache'), { recursive: true });
    const bad = run();
    assert.notEqual(bad.status, 0);
    assert.match(String(bad.stderr), /does not decompress to the size and sha256 in manifest\.json/);
  } finally {
    cleanup();
  }
});

test('the published package holds no test, fixture or test build (package.json "files")', (t) => {
  const r = spawnSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: ROOT, encoding: 'utf8' });
  if (r.status !== 0) return t.skip(`npm pack is not available here: ${r.stderr}`);
  const files = (JSON.parse(r.stdout) as Array<{ files: Array<{ path: string }> }>)[0]!.files.map((f) => f.path);
  assert.ok(files.some((f) => f.startsWith('dist/src/')), 'the library is packed');
  const leaked = files.filter((f) => /^(test|dist\/test|dist\/bench|bench|scripts)\//.test(f) || /\.(vhdx?|avhdx?|gz)$/.test(f));
  assert.deepEqual(leaked, []);
});
