/**
 * One list of the Debian packages the tests need (.ci/apt-packages): CI installs what it reads there,
 * every oracle of test/helpers/oracles.ts comes from one of them, and the README's test command, which
 * a user runs literally on a fresh Debian, installs exactly these (after apt-get update).
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { APT_PACKAGES_FILE, aptPackages, ORACLES } from './helpers/oracles.js';

const ROOT = dirname(dirname(APT_PACKAGES_FILE));
const names = (): string[] => aptPackages().map((p) => p.name);

test('every oracle comes from exactly one listed package, and the list names no unknown oracle', () => {
  const packages = aptPackages();
  assert.ok(packages.length >= ORACLES.length / 2, `the list parses: ${JSON.stringify(packages)}`);
  for (const p of packages) assert.match(p.name, /^[a-z0-9][a-z0-9.+-]+$/, `a Debian package name: ${p.name}`);
  assert.equal(new Set(names()).size, packages.length, 'no package twice');
  for (const oracle of ORACLES) {
    const from = packages.filter((p) => p.provides.includes(oracle)).map((p) => p.name);
    assert.equal(from.length, 1, `${oracle} is given by one package (got ${from.join(', ') || 'none'})`);
  }
  const known = new Set<string>(ORACLES);
  for (const p of packages) for (const o of p.provides) assert.ok(known.has(o), `${p.name} gives ${o}, which oracles.ts does not know`);
});

test("the README's test command updates the package lists, then installs exactly the listed packages", () => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const commands = readme.split('\n').filter((l) => /apt-get install/.test(l));
  assert.equal(commands.length, 1, `one install command in the README: ${commands.join(' / ')}`);
  const m = /^ {4}sudo apt-get update && sudo apt-get install -y ([a-z0-9.+\- ]+?) && npm ci && npm test$/.exec(commands[0]!);
  assert.ok(m, `the README's command, as a user copies it: ${commands[0]}`);
  assert.deepEqual(m[1]!.split(' '), names());
});

test('CI installs the packages it reads from the list, and names none itself', () => {
  const run = readFileSync(join(ROOT, '.ci/run'), 'utf8');
  const read = run.split('\n').find((l) => l.startsWith('mapfile -t packages '));
  assert.ok(read, '.ci/run reads the list into `packages`');
  assert.match(run, /apt-get install [^\n]*"\$\{packages\[@\]\}"/);
  for (const name of names()) assert.doesNotMatch(run, new RegExp(`\\s${name.replace(/[.+]/g, '\\$&')}\\s`), `${name} is not spelled in .ci/run`);
  // The line CI runs, run here: it must read the same packages as the helpers do.
  const r = spawnSync('bash', ['-c', `${read}\nprintf '%s\\n' "\${packages[@]}"`], { cwd: ROOT, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(r.stdout.trim().split('\n'), names());
});
