/**
 * The Durable Object claim store in the real Workers runtime: the worker in claim-worker.ts is
 * bundled by esbuild into memory and run by Miniflare (workerd, offline). `remote()` is a
 * ClaimStore whose every call runs `durableObjectStore` inside that worker.
 */
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'
import { Miniflare } from 'miniflare'
import { type ClaimRecord, type ClaimStore, StoreUnavailableError } from '../../src/stores/store.js'

export type Binding = 'SQLITE' | 'KV' | 'INSPECT' | 'BROKEN'

export type ClaimWorker = {
  mf: Miniflare
  remote(binding: Binding, extra?: { shards?: number; timeout?: number }): ClaimStore
  dispose(): Promise<void>
}

export async function startClaimWorker(): Promise<ClaimWorker> {
  const bundle = await build({
    entryPoints: [fileURLToPath(new URL('./claim-worker.ts', import.meta.url))],
    bundle: true,
    write: false,
    format: 'esm',
    platform: 'neutral',
    target: 'es2022',
    logLevel: 'silent',
  })
  const script = bundle.outputFiles[0]?.text
  if (!script) throw new Error('esbuild produced no worker bundle')
  if (/from\s*["']node:/.test(script)) throw new Error('the worker bundle imports node: modules')
  const mf = new Miniflare({
    modules: true,
    script,
    compatibilityDate: '2025-06-01',
    durableObjects: {
      SQLITE: { className: 'ClaimStoreObject', useSQLite: true },
      KV: 'ClaimStoreObject',
      INSPECT: { className: 'InspectableClaimStore', useSQLite: true },
      BROKEN: 'BrokenObject',
    },
  })
  await mf.ready

  const remote = (binding: Binding, extra: { shards?: number; timeout?: number } = {}): ClaimStore => {
    const run = async (op: Record<string, unknown>) => {
      const response = await mf.dispatchFetch('http://worker/op', {
        method: 'POST',
        body: JSON.stringify({ binding, ...extra, ...op }),
      })
      const body = (await response.json()) as { result?: unknown; error?: { name: string; message: string } }
      if (body.error) {
        if (body.error.name === 'StoreUnavailableError') throw new StoreUnavailableError(body.error.message)
        throw Object.assign(new Error(body.error.message), { name: body.error.name })
      }
      return body.result
    }
    return {
      claim: async (key, record) => (await run({ op: 'claim', key, record })) as boolean,
      transition: async (key, from, next, owner) => (await run({ op: 'transition', key, from, next, owner })) as boolean,
      get: async (key) => ((await run({ op: 'get', key })) ?? undefined) as ClaimRecord | undefined,
    }
  }
  return { mf, remote, dispose: () => mf.dispose() }
}
