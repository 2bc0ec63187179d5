/**
 * A tiny Worker for the Durable Object store test, bundled with esbuild and run in workerd by
 * Miniflare. `POST /op` runs one ClaimStore operation through `durableObjectStore` and answers
 * its result (or the error's name and message), so the Node side can run the contract suite.
 */
import { ClaimStoreObject, type DurableObjectNamespaceLike, durableObjectStore } from '../../src/stores/durable-object.js'
import type { ClaimRecord, ClaimState } from '../../src/stores/store.js'

export { ClaimStoreObject }

/** Sweeps at each expiry and lets the test list its storage, to watch the alarm work. */
export class InspectableClaimStore extends ClaimStoreObject {
  protected override sweepDelay = 0
  override async fetch(request: Request): Promise<Response> {
    if (new URL(request.url).pathname === '/__keys') return Response.json([...(await this.storage.list({ prefix: '' })).keys()])
    return super.fetch(request)
  }
}

/** A Durable Object that is not a claim store: every call throws, as an overloaded or broken object would. */
export class BrokenObject {
  async fetch(): Promise<Response> {
    throw new Error('object exploded')
  }
}

type Env = Record<'SQLITE' | 'KV' | 'INSPECT' | 'BROKEN', DurableObjectNamespaceLike>

type Op = {
  binding: keyof Env
  shards?: number
  timeout?: number
  op: 'claim' | 'transition' | 'get'
  key: string
  record?: ClaimRecord
  from?: ClaimState
  next?: ClaimRecord | null
  owner?: string
}

export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    const url = new URL(request.url)
    if (url.pathname === '/keys') {
      const namespace = env.INSPECT
      const shard = url.searchParams.get('object') ?? 'hono-mpp:claims:0'
      const stub = namespace.get(namespace.idFromName(shard))
      return stub.fetch('https://inspect/__keys')
    }
    const body = (await request.json()) as Op
    try {
      const store = durableObjectStore({
        namespace: env[body.binding],
        ...(body.shards !== undefined && { shards: body.shards }),
        ...(body.timeout !== undefined && { timeout: body.timeout }),
      })
      let result: unknown
      if (body.op === 'claim') result = await store.claim(body.key, body.record as ClaimRecord)
      else if (body.op === 'transition') result = await store.transition(body.key, body.from as ClaimState, body.next ?? null, body.owner as string)
      else result = (await store.get(body.key)) ?? null
      return Response.json({ result })
    } catch (error) {
      const e = error as Error
      return Response.json({ error: { name: e.name, message: e.message } })
    }
  },
}
