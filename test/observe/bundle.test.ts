/**
 * Metrics and traces cost nothing when they are not imported: a minimal paid Worker bundled by
 * esbuild (as bench/bundle.ts builds it) includes neither prom-client, @opentelemetry/api nor
 * the adapters; a Worker that imports hono-mpp/otel pulls in the API and still needs no `node:`.
 */
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'
import { describe, expect, test } from 'vitest'
import { workers } from '../../bench/bundle.js'

const root = fileURLToPath(new URL('../..', import.meta.url))

async function inputsOf(contents: string): Promise<{ inputs: string[]; external: string[] }> {
  const result = await build({
    stdin: { contents, resolveDir: root, sourcefile: 'worker.ts', loader: 'ts' },
    bundle: true,
    format: 'esm',
    platform: 'browser',
    conditions: ['workerd', 'worker', 'browser'],
    external: ['node:*'],
    write: false,
    metafile: true,
    logLevel: 'silent',
  })
  const external = Object.values(result.metafile.inputs).flatMap((input) => input.imports.filter((i) => i.external).map((i) => i.path))
  return { inputs: Object.keys(result.metafile.inputs), external }
}

describe('observability is opt-in', () => {
  test('a minimal paid Worker bundles no prom-client, no @opentelemetry/api, no adapter, no discovery and no paywall', async () => {
    const { inputs } = await inputsOf(workers.ours)
    expect(inputs.some((path) => path.includes('src/index.ts'))).toBe(true)
    expect(inputs.filter((path) => /prom-client|@opentelemetry|src\/metrics\.ts|src\/otel\.ts|src\/discovery\.ts|src\/paywall\//.test(path))).toEqual([])
  })

  test('a Worker with hono-mpp/otel bundles the API and needs no node: module', async () => {
    const { inputs, external } = await inputsOf(`${workers.ours}\nimport { paymentTracing } from './src/otel.ts'\nexport const tracing = paymentTracing()\n`)
    expect(inputs.some((path) => path.includes('@opentelemetry/api'))).toBe(true)
    expect(external.filter((path) => path.startsWith('node:'))).toEqual([])
  })
})
