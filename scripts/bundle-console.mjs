// Bundles the web console's client (preact, TSX) into dist/src/console/assets/app.{js,css}, which the
// server reads at start (src/console/assets.ts). Everything the page runs is in these two files: no
// CDN, it works offline.
import { build } from 'esbuild';

await build({
  entryPoints: { app: 'src/console/client/main.tsx' },
  outdir: 'dist/src/console/assets',
  bundle: true,
  platform: 'browser',
  format: 'esm',
  target: ['chrome110', 'firefox110', 'safari16'],
  jsx: 'automatic',
  jsxImportSource: 'preact',
  minify: true,
  sourcemap: false,
  logLevel: 'warning',
});
