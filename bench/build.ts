/**
 * The processes under test run our code as it ships: compiled JavaScript, not TypeScript through
 * a loader. tsx (esbuild with `keepNames`) wraps every closure in a `__name()` call and adds a
 * module-hooks thread: a few microseconds per request that no user pays, and that mppx (already
 * JavaScript) would not pay either. So each child entry is bundled here once per run (our
 * sources inlined, packages left to node_modules) and started with plain `node`.
 */
import { mkdirSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'

const root = fileURLToPath(new URL('..', import.meta.url))
const outdir = `${root}node_modules/.cache/hono-mpp-bench`
const built = new Map<string, Promise<string>>()

/** Compiles `bench/<name>.ts` to an ES module next to node_modules; resolves its path. */
export function compiled(name: 'server' | 'memory' | 'session-server'): Promise<string> {
  let file = built.get(name)
  if (!file) {
    file = (async () => {
      mkdirSync(outdir, { recursive: true })
      const outfile = `${outdir}/${name}.mjs`
      await build({
        entryPoints: [`${root}bench/${name}.ts`],
        outfile,
        bundle: true,
        packages: 'external',
        platform: 'node',
        format: 'esm',
        target: 'node20',
        sourcemap: 'linked',
        logLevel: 'error',
      })
      return outfile
    })()
    built.set(name, file)
  }
  return file
}
