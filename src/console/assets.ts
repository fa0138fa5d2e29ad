// The page and the client bundle (built by scripts/bundle-console.mjs into ./assets beside this module,
// part of the package: the console needs nothing from the network).
import { readFile } from 'node:fs/promises';
import { DiskchainError } from '../api/index.js';

export interface Assets {
  files: Map<string, { type: string; body: Buffer }>;
  page: (token: string) => string;
}

const TYPES: Record<string, string> = { 'app.js': 'text/javascript; charset=utf-8', 'app.css': 'text/css; charset=utf-8' };

export async function loadAssets(): Promise<Assets> {
  const files = new Map<string, { type: string; body: Buffer }>();
  for (const [name, type] of Object.entries(TYPES)) {
    const url = new URL(`./assets/${name}`, import.meta.url);
    const body = await readFile(url).catch(() => {
      throw new DiskchainError('NOT_FOUND', `the console's client bundle is missing (${url.pathname}): run npm run build`, { file: url.pathname });
    });
    files.set(name, { type, body });
  }
  // The token rides in the page so its scripts can put it in the X-Diskchain-Token header; only a
  // request that already carries the token (cookie) is served the page.
  const page = (token: string): string => `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<meta name="diskchain-token" content="${token}">
<title>diskchain console</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/assets/app.css">
<script type="module" src="/assets/app.js"></script>
</head>
<body><div id="app"></div></body>
</html>
`;
  return { files, page };
}
