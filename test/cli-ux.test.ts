import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { EXIT_CODES_HELP, exitCodeFor } from '../src/cli/output.js';
import type { ErrorCode } from '../src/io/errors.js';
import { createChild } from '../src/api/create.js';
import { CLI } from './helpers/cli.js';

/** What a new user trips over (issue 10): errors, options, formats, remembered links, small things. */

const dir = mkdtempSync(join(tmpdir(), 'diskchain-ux-'));
after(() => rmSync(dir, { recursive: true, force: true }));
/** The link store of these tests' "user" (and of a second user, who never made the links). */
const state = join(dir, 'state');
const otherState = join(dir, 'other-state');

interface Result {
  status: number;
  stdout: string;
  stderr: string;
  raw: Buffer;
}

function dc(args: string[], options: { input?: Uint8Array; state?: string } = {}): Result {
  const r = spawnSync('node', [CLI, ...args], { cwd: dir, input: options.input, maxBuffer: 64 * 1024 * 1024, env: { ...process.env, XDG_STATE_HOME: options.state ?? state } });
  return { status: r.status ?? -1, stdout: r.stdout.toString('utf8'), stderr: r.stderr.toString('utf8'), raw: r.stdout };
}

/** One line on stderr naming the code, no stack trace. */
function oneLineError(r: Result, status: number, code: string | RegExp): void {
  assert.equal(r.status, status, `exit ${r.status}, stderr: ${r.stderr}`);
  const lines = r.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `one line expected: ${r.stderr}`);
  assert.match(lines[0]!, typeof code === 'string' ? new RegExp(`^diskchain: ${code}: `) : code);
  assert.doesNotMatch(r.stderr, /\n\s+at |internal error/);
}

const p = (...parts: string[]): string => join(dir, ...parts);

test('setup: a base in A with data, a checkpoint in B made by diskchain', () => {
  mkdirSync(p('A'));
  mkdirSync(p('B'));
  assert.equal(dc(['create', 'A/base.vhdx', '--size', '8M', '--block-size', '1M']).status, 0);
  assert.equal(dc(['write', 'A/base.vhdx', '--offset', '0'], { input: Buffer.alloc(3 * 1024 * 1024, 0x5a) }).status, 0);
  const made = dc(['create', 'B/kid.avhdx', '--parent', 'A/base.vhdx']);
  assert.equal(made.status, 0, made.stderr);
});

test('a folder given as a disk: one line, exit 2, for every command that opens one', () => {
  for (const args of [['info', 'A'], ['check', 'A'], ['read', 'A'], ['chain', 'A'], ['map', 'A'], ['write', 'A', '--offset', '0'], ['convert', 'A', 'x.vhdx'], ['compare', 'A', 'A/base.vhdx']]) {
    const r = dc(args, { input: Buffer.from('x') });
    oneLineError(r, 2, 'INVALID_ARGUMENT');
    assert.match(r.stderr, /a folder, not a disk image file/, args.join(' '));
  }
  assert.equal(existsSync(p('x.vhdx')), false);
});

/** Runs the CLI with its stdout closed by the reader before anything is written (as `| head` does, early). */
function withClosedStdout(args: string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn('node', [CLI, ...args], { cwd: dir, env: { ...process.env, XDG_STATE_HOME: state }, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.destroy();
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (code) => resolve({ code, stderr }));
  });
}

test('a closed pipe (| head) stops the command quietly with exit 141', async () => {
  for (const args of [['read', 'B/kid.avhdx'], ['info', 'B/kid.avhdx'], ['map', 'A/base.vhdx', '--json']]) {
    const r = await withClosedStdout(args);
    assert.equal(r.code, 141, `${args.join(' ')}: ${r.stderr}`);
    assert.equal(r.stderr, '', args.join(' '));
  }
  // Through a shell, as a user types it.
  const shell = spawnSync('bash', ['-c', `node ${CLI} read B/kid.avhdx | head -c 10 > /dev/null; echo "\${PIPESTATUS[0]}"`], { cwd: dir, env: { ...process.env, XDG_STATE_HOME: state } });
  assert.equal(shell.stdout.toString().trim(), '141');
  assert.equal(shell.stderr.toString(), '');
});

test('-f/--source-format on every command that opens a disk; the hints name options that exist', () => {
  const image = Buffer.alloc(1024 * 1024);
  randomBytes(4096).copy(image, 8192);
  writeFileSync(p('disk.img'), image);
  const refused = dc(['info', 'disk.img']);
  oneLineError(refused, 3, 'UNKNOWN_FORMAT');
  assert.match(refused.stderr, /-f raw/);
  assert.doesNotMatch(refused.stderr, /--format raw/);
  assert.equal(JSON.parse(dc(['info', 'disk.img', '-f', 'raw', '--json']).stdout).format, 'raw');
  assert.equal(JSON.parse(dc(['info', 'disk.img', '--source-format', 'raw', '--json']).stdout).format, 'raw');
  assert.equal(JSON.parse(dc(['info', 'disk.img', '--raw', '--json']).stdout).format, 'raw', 'the old spelling still works');
  assert.ok(dc(['read', 'disk.img', '-f', 'raw']).raw.equals(image));
  assert.equal(dc(['check', 'disk.img', '-f', 'raw']).status, 0);
  assert.equal(dc(['chain', 'disk.img', '-f', 'raw']).status, 0);
  assert.equal(JSON.parse(dc(['map', 'disk.img', '-f', 'raw', '--json']).stdout).extents.length > 0, true);
  assert.equal(dc(['measure', 'disk.img', '-f', 'raw']).status, 0);
  assert.equal(dc(['convert', 'disk.img', 'disk.vhdx', '-f', 'raw']).status, 0);
  assert.equal(dc(['compare', 'disk.img', 'disk.vhdx', '-f', 'raw']).status, 0);
  assert.equal(dc(['compare', 'disk.vhdx', 'disk.img', '-F', 'raw']).status, 0);
  assert.equal(dc(['write', 'disk.img', '-f', 'raw', '--offset', '0'], { input: Buffer.alloc(512, 1) }).status, 0);
  assert.equal(readFileSync(p('disk.img'))[0], 1);
  assert.equal(dc(['info', 'disk.img', '-f', 'qcow2']).status, 2);
  for (const cmd of ['info', 'check', 'read', 'write', 'chain', 'map', 'compare', 'convert', 'measure', 'serve']) {
    assert.match(dc([cmd, '--help']).stdout, /-f, --source-format <format>/, `${cmd} --help`);
  }
});

test('options that would be ignored are refused, and nothing is made', () => {
  const cases: Array<[string[], RegExp]> = [
    [['convert', 'A/base.vhdx', 'o1.raw', '-O', 'raw', '--type', 'fixed'], /--type does not apply to a raw image/],
    [['convert', 'A/base.vhdx', 'o2.raw', '-O', 'raw', '--block-size', '1M'], /--block-size does not apply to a raw image/],
    [['create', 'c1.avhdx', '--parent', 'A/base.vhdx', '--type', 'fixed'], /--type does not apply to a differencing disk/],
    [['create', 'c2.avhdx', '--parent', 'A/base.vhdx', '--format', 'vhdx'], /--format does not apply/],
    [['create', 'c3.avhdx', '--parent', 'A/base.vhdx', '--logical-sector', '4096', '--physical-sector', '512'], /--logical-sector, --physical-sector do not apply/],
    [['create', 'c4.avhdx', '--parent', 'A/base.vhdx', '--size', '1G'], /--size does not apply/],
    [['create', 'c5.vhd', '--size', '1G', '--logical-sector', '4096'], /does not apply to a VHD/],
    [['create', 'c6.raw', '--size', '1G', '--block-size', '1M'], /does not apply to a raw image/],
  ];
  for (const [args, message] of cases) {
    const r = dc(args);
    oneLineError(r, 2, 'INVALID_ARGUMENT');
    assert.match(r.stderr, message, args.join(' '));
    assert.equal(existsSync(p(args[0] === 'convert' ? args[2]! : args[1]!)), false, args.join(' '));
  }
  assert.deepEqual(readdirSync(dir).filter((f) => /^(o\d|c\d)/.test(f)), []);
});

test('the format follows the target name unless given; a contradiction is an error', () => {
  const fmt = (f: string): string => JSON.parse(dc(['info', f, '--json']).stdout).format;
  assert.equal(dc(['create', 'n.vhd', '--size', '4M']).status, 0);
  assert.equal(fmt('n.vhd'), 'vhd');
  assert.equal(dc(['create', 'n.avhd', '--parent', 'n.vhd']).status, 0);
  assert.equal(fmt('n.avhd'), 'vhd');
  assert.equal(dc(['create', 'n.img', '--size', '4M']).status, 0);
  assert.equal(statSync(p('n.img')).size, 4 * 1024 * 1024);
  assert.equal(dc(['convert', 'A/base.vhdx', 'n2.VHD']).status, 0);
  assert.equal(fmt('n2.VHD'), 'vhd');
  assert.equal(dc(['convert', 'A/base.vhdx', 'n3.raw']).status, 0);
  assert.equal(statSync(p('n3.raw')).size, 8 * 1024 * 1024);
  assert.equal(dc(['convert', 'A/base.vhdx', 'n4.disk']).status, 0, 'an unknown extension: VHDX');
  assert.equal(fmt('n4.disk'), 'vhdx');
  for (const args of [['create', 'bad.vhd', '--size', '4M', '--format', 'vhdx'], ['convert', 'A/base.vhdx', 'bad.vhdx', '-O', 'vhd'], ['create', 'bad.avhd', '--parent', 'A/base.vhdx'], ['create', 'bad.img', '--parent', 'A/base.vhdx']]) {
    const r = dc(args);
    oneLineError(r, 2, 'INVALID_ARGUMENT');
    assert.match(r.stderr, /named like a/);
    assert.equal(existsSync(p(args[1] === 'A/base.vhdx' ? args[2]! : args[1]!)), false);
  }
});

test('a create that refuses leaves no file, so the same name works at once', () => {
  for (const [args, fixed] of [
    [['create', 'r.vhdx', '--size', '64M', '--block-size', '3M'], ['create', 'r.vhdx', '--size', '64M', '--block-size', '4M']],
    [['create', 'r.vhd', '--size', '64M', '--block-size', '3M'], ['create', 'r.vhd', '--size', '64M']],
    [['create', 'r2.vhdx', '--size', '0'], ['create', 'r2.vhdx', '--size', '1M']],
  ] as Array<[string[], string[]]>) {
    const r = dc(args);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.equal(existsSync(p(args[1]!)), false, `${args.join(' ')} left a file`);
    const again = dc(fixed);
    assert.equal(again.status, 0, again.stderr);
  }
});

test('read -o writes a partial file, renamed when complete; a failed read leaves the old file as it was', () => {
  // A fixed VHDX with 1 MiB blocks laid out in order; cutting the file's tail breaks the reads of the last blocks only.
  assert.equal(dc(['create', 'cut.vhdx', '--size', '8M', '--type', 'fixed', '--block-size', '1M']).status, 0);
  assert.equal(dc(['write', 'cut.vhdx', '--offset', '0'], { input: Buffer.alloc(8 * 1024 * 1024, 7) }).status, 0);
  const full = dc(['read', 'cut.vhdx']).raw;
  assert.equal(dc(['read', 'cut.vhdx', '-o', 'out.bin']).status, 0);
  assert.ok(readFileSync(p('out.bin')).equals(full));
  assert.equal(existsSync(p('out.bin.diskchain-partial')), false);
  writeFileSync(p('out.bin'), 'the old content');
  assert.deepEqual(JSON.parse(dc(['info', 'cut.vhdx', '--json']).stdout).problems, []);
  truncateSync(p('cut.vhdx'), statSync(p('cut.vhdx')).size - 3 * 1024 * 1024);
  // info says so (it printed nothing wrong before).
  const info = dc(['info', 'cut.vhdx']);
  assert.equal(info.status, 0);
  assert.match(info.stdout, /^PROBLEMS\s+3: BLOCK_PAST_EOF: .*diskchain check lists them all/m);
  assert.equal(JSON.parse(dc(['info', 'cut.vhdx', '--json']).stdout).problems.length, 3);
  const broken = dc(['read', 'cut.vhdx', '-o', 'out.bin']);
  assert.equal(broken.status, 3, broken.stderr);
  assert.equal(readFileSync(p('out.bin'), 'utf8'), 'the old content');
  assert.equal(existsSync(p('out.bin.diskchain-partial')), false);
  // Not a regular file: written in place (never renamed over).
  assert.equal(dc(['read', 'A/base.vhdx', '-o', '/dev/null']).status, 0);
  assert.ok(statSync('/dev/null').isCharacterDevice());
  oneLineError(dc(['read', 'A/base.vhdx', '-o', 'A']), 2, 'INVALID_ARGUMENT');
});

test('a chain diskchain made across folders works in every command without --search-path', () => {
  const base = dc(['read', 'A/base.vhdx']).raw;
  const read = dc(['read', 'B/kid.avhdx']);
  assert.equal(read.status, 0, read.stderr);
  assert.ok(read.raw.equals(base));
  for (const args of [['info', 'B/kid.avhdx'], ['check', 'B/kid.avhdx'], ['chain', 'B/kid.avhdx'], ['map', 'B/kid.avhdx'], ['measure', 'B/kid.avhdx'], ['compare', 'B/kid.avhdx', 'A/base.vhdx'], ['convert', 'B/kid.avhdx', 'B/flat.vhdx']]) {
    const r = dc(args);
    assert.equal(r.status, 0, `${args.join(' ')}: ${r.stderr}`);
  }
  assert.equal(JSON.parse(dc(['info', 'B/kid.avhdx', '--json']).stdout).parent.identityMatches, true);
  assert.equal(dc(['write', 'B/kid.avhdx', '--offset', '512'], { input: Buffer.alloc(512, 9) }).status, 0);
  assert.equal(dc(['read', 'B/kid.avhdx', '--offset', '512', '--length', '1']).raw[0], 9);
  // A sibling's merge in A would change the base B/kid.avhdx reads through: refused.
  assert.equal(dc(['create', 'A/sib.avhdx', '--parent', 'A/base.vhdx']).status, 0);
  const merge = dc(['merge', 'A/sib.avhdx']);
  assert.equal(merge.status, 4, merge.stderr);
  assert.match(merge.stderr, /HAS_DEPENDENTS.*B\/kid\.avhdx/);
  const write = dc(['write', 'A/base.vhdx', '--offset', '0'], { input: Buffer.alloc(512) });
  assert.equal(write.status, 4);
  assert.match(write.stderr, /HAS_DEPENDENTS.*B\/kid\.avhdx/);
});

test('for a user who made no such link, the parent stays out of reach until named once with --search-path', () => {
  const refused = dc(['read', 'B/kid.avhdx', '--length', '512'], { state: otherState });
  oneLineError(refused, 4, 'PATH_NOT_ALLOWED');
  assert.match(dc(['info', 'B/kid.avhdx'], { state: otherState }).stdout, /parent found\s+no: only outside the allowed folders/);
  const check = dc(['check', 'B/kid.avhdx'], { state: otherState });
  assert.equal(check.status, 1);
  assert.match(check.stdout, /PATH_NOT_ALLOWED/);
  assert.equal(dc(['chain', 'B/kid.avhdx', '--search-path', 'A'], { state: otherState }).status, 0);
  for (const args of [['read', 'B/kid.avhdx', '--length', '512'], ['check', 'B/kid.avhdx'], ['info', 'B/kid.avhdx']]) {
    assert.equal(dc(args, { state: otherState }).status, 0, args.join(' '));
  }
});

test('untrusted locators still cannot escape, and a remembered parent is still checked by identity', async () => {
  // A child made by the library (no link store): its locator points into A, as a foreign file's could.
  mkdirSync(p('C'));
  const foreign = await createChild(p('C', 'foreign.avhdx'), p('A', 'base.vhdx'));
  await foreign.close();
  oneLineError(dc(['read', 'C/foreign.avhdx', '--length', '512']), 4, 'PATH_NOT_ALLOWED');
  oneLineError(dc(['convert', 'C/foreign.avhdx', 'C/out.vhdx']), 4, 'PATH_NOT_ALLOWED');
  assert.equal(existsSync(p('C', 'out.vhdx')), false);
  // The remembered pair B/kid -> A/base: another disk put at A/base.vhdx is refused by identity.
  rmSync(p('A', 'sib.avhdx'));
  writeFileSync(p('A', 'base.keep'), readFileSync(p('A', 'base.vhdx')));
  rmSync(p('A', 'base.vhdx'));
  assert.equal(dc(['create', 'A/base.vhdx', '--size', '8M']).status, 0);
  oneLineError(dc(['read', 'B/kid.avhdx', '--length', '512']), 4, 'PARENT_MISMATCH');
  rmSync(p('A', 'base.vhdx'));
  writeFileSync(p('A', 'base.vhdx'), readFileSync(p('A', 'base.keep')));
  assert.equal(dc(['read', 'B/kid.avhdx', '--length', '512']).status, 0);
});

test('small ones: read past the end, check on a non-disk, --search-path typo, map header, --quiet, no escapes', () => {
  const beyond = dc(['read', 'A/base.vhdx', '--offset', '1G']);
  oneLineError(beyond, 2, 'OUT_OF_RANGE');
  assert.match(beyond.stderr, /beyond the end/);
  assert.doesNotMatch(beyond.stderr, /-\d/);
  const past = dc(['read', 'A/base.vhdx', '--offset', '8M', '--length', '1']);
  oneLineError(past, 2, 'OUT_OF_RANGE');
  assert.equal(dc(['read', 'A/base.vhdx', '--offset', '8M']).raw.length, 0, 'reading from the very end reads nothing');

  writeFileSync(p('notes.txt'), 'not a disk\n');
  const check = dc(['check', 'notes.txt']);
  assert.equal(check.status, 3);
  assert.equal(check.stdout.match(/offset 0 \(0x0\)/g)?.length, 1, check.stdout);

  for (const cmd of ['chain', 'read', 'info', 'check', 'map', 'merge']) {
    oneLineError(dc([cmd, 'B/kid.avhdx', '--search-path', '/nonexistent']), 2, 'INVALID_ARGUMENT');
  }

  const map = dc(['map', 'B/kid.avhdx']).stdout.split('\n');
  assert.match(map[0]!, /^\s+offset\s+length\s+state\s+layer$/);

  const quiet = dc(['-q', 'create', 'quiet.vhdx', '--size', '1M']);
  assert.equal(quiet.status, 0);
  assert.equal(quiet.stdout + quiet.stderr, '');
  const quietAfter = dc(['convert', 'quiet.vhdx', 'quiet2.vhdx', '--quiet']);
  assert.equal(quietAfter.status, 0);
  assert.equal(quietAfter.stdout + quietAfter.stderr, '');
  assert.equal(JSON.parse(dc(['-q', 'info', 'quiet2.vhdx', '--json']).stdout).format, 'vhdx', '--json still prints');
  oneLineError(dc(['-q', 'info', 'nothing-here.vhdx']), 5, 'IO');

  // Output that is not a terminal carries no escape sequences (there is no colour at all; progress only on a TTY).
  for (const args of [['convert', 'A/base.vhdx', 'esc.vhdx'], ['info', 'A/base.vhdx'], ['check', 'notes.txt'], ['frobnicate']]) {
    const r = dc(args);
    assert.doesNotMatch(r.stdout + r.stderr, /\x1b/, args.join(' '));
  }
});

test('usage errors are one line too, exit 2', () => {
  for (const args of [['frobnicate'], ['read'], ['info', 'A/base.vhdx', '--frob'], ['info', 'A/base.vhdx', '-f', 'qcow2'], ['vm', 'nope']]) {
    oneLineError(dc(args), 2, /^diskchain: .*--help lists/);
  }
});

test('help documents every exit code, scan\'s and --search-path\'s behaviour', () => {
  const help = dc(['--help']).stdout;
  for (const code of [0, 1, 2, 3, 4, 5, 6, 7, 70, 130, 141]) assert.match(help, new RegExp(`^  ${code}\\s`, 'm'), `exit code ${code} in --help`);
  const scan = dc(['scan', '--help']).stdout;
  assert.match(scan, /exit 0/i);
  assert.match(scan, /1 when/);
  assert.match(dc(['read', '--help']).stdout, /4 folder levels/);
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  assert.match(readme, /npx diskchain/);
  for (const code of [0, 1, 2, 3, 4, 5, 6, 7, 70, 130, 141]) assert.match(readme, new RegExp(`\\b${code}\\b`), `exit code ${code} in the README`);
});

test('every error code maps to an exit code that --help documents', () => {
  const codes: ErrorCode[] = [
    'CORRUPT', 'TRUNCATED', 'UNSUPPORTED', 'UNKNOWN_FORMAT', 'INVALID_ARGUMENT', 'READ_ONLY', 'OUT_OF_RANGE', 'PARENT_NOT_FOUND', 'PARENT_MISMATCH',
    'CHAIN_CYCLE', 'CHAIN_TOO_DEEP', 'PATH_NOT_ALLOWED', 'NO_SPACE', 'HAS_DEPENDENTS', 'JOURNAL_MISMATCH', 'ABORTED', 'QEMU_FAILED', 'QMP_ERROR',
    'QMP_CLOSED', 'TIMEOUT', 'IO', 'LOCKED', 'VM_BUSY', 'VM_STATE', 'NOT_FOUND', 'CHECKPOINT_NOT_FOUND', 'AMBIGUOUS', 'MANIFEST_INVALID', 'EXISTS', 'FORBIDDEN',
  ];
  const documented = new Set([...EXIT_CODES_HELP.matchAll(/^ {2}(\d+)\s/gm)].map((m) => Number(m[1])));
  for (const code of codes) assert.ok(documented.has(exitCodeFor(code)), `${code} -> ${exitCodeFor(code)}`);
  for (const code of ['QEMU_FAILED', 'QMP_ERROR', 'QMP_CLOSED', 'TIMEOUT'] as const) {
    assert.equal(exitCodeFor(code), 7);
    assert.match(EXIT_CODES_HELP, new RegExp(code));
  }
  assert.equal(exitCodeFor('VM_BUSY'), 4);
  assert.equal(exitCodeFor('CORRUPT'), 3);
});

test('on a terminal, read -o and convert show progress on stderr; -q and a pipe show none', () => {
  // script(1) (util-linux) runs the command on a pseudo-terminal.
  const onTty = (args: string[]): string =>
    spawnSync('script', ['-qec', ['node', CLI, ...args].map((a) => `'${a}'`).join(' '), '/dev/null'], { cwd: dir, env: { ...process.env, XDG_STATE_HOME: state } }).stdout.toString('utf8');
  assert.match(onTty(['read', 'A/base.vhdx', '-o', 'tty.bin']), /read \[.*\d+%/);
  assert.ok(readFileSync(p('tty.bin')).equals(dc(['read', 'A/base.vhdx']).raw));
  assert.match(onTty(['convert', 'A/base.vhdx', 'tty.vhdx']), /convert \[/);
  assert.equal(onTty(['-q', 'read', 'A/base.vhdx', '-o', 'tty2.bin']), '');
  const piped = dc(['read', 'A/base.vhdx', '-o', 'tty3.bin']);
  assert.equal(piped.stdout + piped.stderr, '');
});

test('links diskchain writes across folders later (reparent, a merge\'s hand-over) are followed without --search-path', () => {
  for (const f of ['E', 'F', 'G']) mkdirSync(p(f));
  assert.equal(dc(['create', 'E/base.vhdx', '--size', '4M', '--block-size', '1M']).status, 0);
  assert.equal(dc(['write', 'E/base.vhdx', '--offset', '0'], { input: Buffer.alloc(4096, 3) }).status, 0);
  assert.equal(dc(['create', 'F/mid.avhdx', '--parent', 'E/base.vhdx']).status, 0);
  assert.equal(dc(['write', 'F/mid.avhdx', '--offset', '4096'], { input: Buffer.alloc(4096, 4) }).status, 0);
  assert.equal(dc(['create', 'F/top.avhdx', '--parent', 'F/mid.avhdx']).status, 0);
  const before = dc(['read', 'F/top.avhdx']).raw;
  // merge F/mid into E/base: the hand-over re-points F/top at E/base, in another folder.
  const merged = dc(['merge', 'F/mid.avhdx']);
  assert.equal(merged.status, 0, merged.stderr);
  const after = dc(['read', 'F/top.avhdx']);
  assert.equal(after.status, 0, after.stderr);
  assert.ok(after.raw.equals(before));
  // reparent onto a copy in a third folder (same identity).
  writeFileSync(p('G', 'copy.vhdx'), readFileSync(p('E', 'base.vhdx')));
  const moved = dc(['reparent', 'F/top.avhdx', 'G/copy.vhdx']);
  assert.equal(moved.status, 0, moved.stderr);
  const chain = JSON.parse(dc(['chain', 'F/top.avhdx', '--json']).stdout);
  assert.equal(chain.layers[1].path, p('G', 'copy.vhdx'));
  assert.ok(dc(['read', 'F/top.avhdx']).raw.equals(before));
  // Another user, who made none of these links, is refused.
  oneLineError(dc(['read', 'F/top.avhdx', '--length', '512'], { state: join(dir, 'third-state') }), 4, 'PATH_NOT_ALLOWED');
});
