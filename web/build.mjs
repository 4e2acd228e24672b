// Builds the web client into mqim/web/static (served by `mqim serve`): one hashed JS bundle,
// one hashed CSS file and an index.html that names them. `--watch` rebuilds on change.
import * as esbuild from 'esbuild';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const outdir = path.resolve(here, '..', 'mqim', 'web', 'static');
const watch = process.argv.includes('--watch');

async function writeIndex(result) {
  const outputs = Object.keys(result.metafile.outputs).map((file) => path.basename(file));
  const js = outputs.find((name) => name.endsWith('.js'));
  const css = outputs.find((name) => name.endsWith('.css'));
  const template = await readFile(path.join(here, 'src', 'index.html'), 'utf8');
  const html = template.replace('%APP_JS%', `assets/${js}`).replace('%APP_CSS%', `assets/${css}`);
  await writeFile(path.join(outdir, 'index.html'), html);
}

const options = {
  entryPoints: { app: path.join(here, 'src', 'main.js'), style: path.join(here, 'src', 'style.css') },
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: ['es2020'],
  minify: !watch,
  sourcemap: watch ? 'inline' : false,
  outdir: path.join(outdir, 'assets'),
  entryNames: '[name]-[hash]',
  metafile: true,
  logLevel: 'warning',
  plugins: [
    {
      name: 'index-html',
      setup(build) {
        build.onEnd(async (result) => {
          if (result.errors.length === 0) await writeIndex(result);
        });
      },
    },
  ],
};

await rm(outdir, { recursive: true, force: true });
await mkdir(path.join(outdir, 'assets'), { recursive: true });
if (watch) {
  const ctx = await esbuild.context(options);
  await ctx.watch();
  console.log(`watching web/src, writing ${outdir}`);
} else {
  await esbuild.build(options);
  console.log(`built ${outdir}`);
}
