/**
 * 4. Cloudflare Worker bundle size: the same minimal paid Worker (one Hono app, one paid route,
 * `export default app`) built on hono-mpp and on mppx/hono, bundled and minified by esbuild for
 * the Workers conditions, then gzipped. `node:` imports are left external and listed: a Worker
 * that has any needs the `nodejs_compat` flag, and ours must have none.
 */
import { fileURLToPath } from 'node:url'
import { gzipSync } from 'node:zlib'
import { build } from 'esbuild'

const root = fileURLToPath(new URL('..', import.meta.url))

const recipient = '0x1111111111111111111111111111111111111111'
const secret = 'worker-secret-0123456789abcdef0123456789abcdef'

// The sources live here as text so the type check never sees an import of a module that is
// still being written (src/tempo).
export const workers = {
  ours: `
import { Hono } from 'hono'
import { mpp } from './src/index.ts'
import { tempo } from './src/tempo/index.ts'
const pay = mpp({ secret: '${secret}', methods: [tempo({ recipient: '${recipient}', rpcUrl: 'https://rpc.moderato.tempo.xyz', chainId: 42431 })] })
const app = new Hono()
app.get('/paid', pay.charge({ amount: '0.01' }), (c) => c.json({ content: 'paid content' }))
export default app
`,
  mppx: `
import { Hono } from 'hono'
import { Mppx, tempo } from 'mppx/hono'
const mppx = Mppx.create({ secretKey: '${secret}', methods: [tempo.charge({ recipient: '${recipient}', testnet: true })] })
const app = new Hono()
app.get('/paid', mppx.charge({ amount: '0.01' }), (c) => c.json({ content: 'paid content' }))
export default app
`,
}

export type BundleSize = { name: string; minified: number; gzip: number; nodeImports: string[]; external: string[] }

export async function bundleSize(name: keyof typeof workers): Promise<BundleSize> {
  const result = await build({
    stdin: { contents: workers[name], resolveDir: root, sourcefile: `${name}-worker.ts`, loader: 'ts' },
    bundle: true,
    minify: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    conditions: ['workerd', 'worker', 'browser'],
    // Optional peers of mppx that a minimal Worker does not install; left out, not counted.
    external: ['node:*', '@modelcontextprotocol/*', '@x402/*', 'express', 'elysia', 'next', 'next/*'],
    write: false,
    metafile: true,
    logLevel: 'silent',
  })
  const code = result.outputFiles[0]!.contents
  const external = new Set<string>()
  for (const input of Object.values(result.metafile.inputs))
    for (const imported of input.imports) if (imported.external && !imported.path.startsWith('<')) external.add(imported.path)
  const all = [...external].sort()
  return {
    name,
    minified: code.length,
    gzip: gzipSync(code, { level: 9 }).length,
    nodeImports: all.filter((path) => path.startsWith('node:')),
    external: all,
  }
}
