// One Debian chromium per test file, driven by playwright-core, with a fresh profile; and the
// console started as the CLI starts it, its URL read from what it prints.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { CHROMIUM, requireOracle } from './oracles.js';
import { CLI as BIN } from './cli.js';

export interface Browser {
  context: BrowserContext;
  close: () => Promise<void>;
}

/** Null (after failing in CI, or skipping loudly elsewhere) when chromium is not installed. */
export async function launchBrowser(t: TestContext): Promise<Browser | null> {
  if (!requireOracle(t, 'chromium')) return null;
  const profile = mkdtempSync(join(tmpdir(), 'diskchain-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1360, height: 860 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  return {
    context,
    close: async () => {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

export interface ConsoleProcess {
  url: string;
  origin: string;
  token: string;
  port: number;
  child: ChildProcess;
  stderr: () => string;
  stop: () => Promise<number | null>;
}

/** `diskchain console --root ...` on a free port; resolves once it printed its URL. */
export async function startConsoleProcess(roots: string[], extra: string[] = []): Promise<ConsoleProcess> {
  const child = spawn(process.execPath, [BIN, 'console', ...roots.flatMap((r) => ['--root', r]), '--port', '0', ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`console did not print its URL: ${err}`)), 15_000);
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /diskchain console: (http:\/\/\S+)\n/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`console exited with ${code}: ${err}`));
    });
  });
  const parsed = new URL(url);
  return {
    url,
    origin: parsed.origin,
    token: parsed.searchParams.get('token')!,
    port: Number(parsed.port),
    child,
    stderr: () => err,
    stop: () =>
      new Promise((resolve) => {
        if (child.exitCode !== null) return resolve(child.exitCode);
        child.once('exit', (code) => resolve(code));
        child.kill('SIGINT');
      }),
  };
}

/** Whether screenshots for docs/ are (re)written: only when asked, so CI leaves the tree clean. */
export const SCREENSHOTS = process.env.DISKCHAIN_SCREENSHOTS === '1';
export const DOCS_SHOTS = new URL('../../../docs/console/', import.meta.url).pathname;

/** With DISKCHAIN_SCREENSHOTS=1: the page (whole, or the viewport for a modal dialog), in the light and the dark theme, as docs/console/<name>-<theme>.png. */
export async function shoot(page: Page, name: string, options: { fullPage?: boolean } = {}): Promise<void> {
  if (!SCREENSHOTS) return;
  mkdirSync(DOCS_SHOTS, { recursive: true });
  await page.mouse.move(0, 0); // no hover highlight in the pictures
  for (const scheme of ['light', 'dark'] as const) {
    await page.emulateMedia({ colorScheme: scheme });
    await page.screenshot({ path: join(DOCS_SHOTS, `${name}-${scheme}.png`), fullPage: options.fullPage ?? true });
  }
  await page.emulateMedia({ colorScheme: 'light' });
}

/** A test file's end: the browser closed, the console stopped with Ctrl-C (it must exit 0), the work folder gone. */
export async function tearDown(browser: Browser | null, consoleProc: ConsoleProcess | undefined, work: string): Promise<void> {
  await browser?.close();
  const code = await consoleProc?.stop();
  assert.equal(code, 0, `the console stops cleanly on Ctrl-C: ${consoleProc?.stderr()}`);
  rmSync(work, { recursive: true, force: true });
}

/**
 * A new tab, and what went wrong in it: uncaught page errors and console errors, except those whose
 * text matches `expected` (the refusals a test provokes, which chromium logs as failed loads).
 */
export async function watchedPage(browser: Browser, expected?: RegExp): Promise<{ page: Page; problems: string[] }> {
  const page = await browser.context.newPage();
  // DISKCHAIN_BROWSER_THROTTLE=N runs the page's scripts N times slower (chromium's CPU throttling): the
  // races between the event stream, renders and effects that a loaded CI machine meets, met on purpose.
  const throttle = Number(process.env.DISKCHAIN_BROWSER_THROTTLE ?? 1);
  if (throttle > 1) await (await browser.context.newCDPSession(page)).send('Emulation.setCPUThrottlingRate', { rate: throttle });
  const problems: string[] = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !(expected && expected.test(m.text()))) problems.push(`console: ${m.text()}`);
  });
  watched.push({ page, problems });
  return { page, problems };
}

/** The tabs of the running test file, newest last: what a failure shows. */
const watched: Array<{ page: Page; problems: string[] }> = [];

/** What the tabs show: the address, the main text, the jobs panel, the problems seen. */
async function describeTabs(): Promise<string> {
  const parts: string[] = [];
  for (const { page, problems } of watched) {
    if (page.isClosed()) continue;
    const text = async (selector: string): Promise<string> => (await page.locator(selector).first().innerText({ timeout: 2000 }).catch((e: Error) => `(${e.message.split('\n')[0]})`)).slice(0, 4000);
    parts.push(`--- tab at ${page.url()}`, '--- main:', await text('main'), '--- jobs:', await text('aside, [aria-label="Jobs"]'), `--- problems: ${JSON.stringify(problems)}`);
  }
  return parts.join('\n');
}

/**
 * A browser test: when it fails, the error says what the page showed at that moment (a timeout alone
 * says only what was awaited; CI keeps nothing else).
 */
export function browserTest(name: string, options: { timeout?: number }, body: (t: TestContext) => Promise<void>): void {
  test(name, options, async (t) => {
    try {
      await body(t);
    } catch (e) {
      if (e instanceof Error) e.message += `\n${await describeTabs()}`;
      throw e;
    }
  });
}
