/**
 * The Cloudflare Worker example in the real Workers runtime: esbuild bundles it the way a Worker
 * is built (browser platform, workerd conditions, no Node built-ins), Miniflare runs the bundle
 * in workerd (offline) with bindings pointing at the local Tempo chain, and the mppx client pays
 * it, pull and push, through `dispatchFetch`.
 *
 * Workers in the one Miniflare instance (one workerd process), all running the same bundle:
 * - `memory`: no CLAIMS binding (per-isolate in-memory claims);
 * - `durable` and `durable-peer`: two Workers sharing one CLAIMS Durable Object namespace, the
 *   way two isolates of a deployed Worker share it;
 * - `misconfigured`: MPP_RECIPIENT missing.
 */
import { execFile } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { builtinModules, createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { gzipSync } from 'node:zlib'
import { type BuildOptions, build, type Plugin } from 'esbuild'
import { Miniflare } from 'miniflare'
import { Mppx, tempo as tempoClient } from 'mppx/client'
import { createClient, getAddress, http } from 'viem'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { afterAll, beforeAll, describe, expect, inject, test } from 'vitest'
import { balanceOf, fundedAccount, localChain, localChainId, pathUsd } from '../../scripts/local-chain.js'
import { parseChallenges, parseReceipt } from '../../src/index.js'
import { decodeJson } from '../../src/protocol/encoding.js'

const here = (path: string) => fileURLToPath(new URL(path, import.meta.url))
const entry = here('./src/index.ts')
const wranglerToml = readFileSync(here('./wrangler.toml'), 'utf8')
const compatibilityDate = /^compatibility_date\s*=\s*"([^"]+)"/m.exec(wranglerToml)?.[1]

/** Fails the build on any Node built-in, `node:`-prefixed or bare (Workers without nodejs_compat have none). */
const noNodeBuiltins: Plugin = {
  name: 'no-node-builtins',
  setup(b) {
    const bare = new Set(builtinModules.filter((name) => !name.startsWith('_')))
    b.onResolve({ filter: /.*/ }, (args) => {
      const name = args.path.split('/')[0]!
      if (args.path.startsWith('node:') || bare.has(args.path) || (bare.has(name) && !args.path.startsWith('.')))
        return { errors: [{ text: `"${args.path}" is a Node built-in, imported by ${args.importer}; Workers without nodejs_compat have none` }] }
      return undefined
    })
  },
}

const workerBuild = (minify: boolean): BuildOptions & { write: false } => ({
  entryPoints: [entry],
  bundle: true,
  write: false,
  format: 'esm',
  platform: 'browser',
  conditions: ['workerd', 'worker', 'browser'],
  target: 'es2022',
  minify,
  logLevel: 'silent',
  plugins: [noNodeBuiltins],
})

const nodeImport = /(?:from\s*|import\s*\(\s*|require\s*\(\s*|import\s+)["']node:/

const rpcUrl = inject('rpcUrl')
const secret = Array.from(crypto.getRandomValues(new Uint8Array(32)), (b) => b.toString(16).padStart(2, '0')).join('')
const recipient = privateKeyToAccount(generatePrivateKey()).address
const durableRecipient = privateKeyToAccount(generatePrivateKey()).address

let script = ''
let minifiedGzipBytes = 0
let mf: Miniflare
/** Miniflare passes its loopback address as Host (a deployed Worker sees its own hostname). */
let realm = ''
let payer: Awaited<ReturnType<typeof fundedAccount>>

beforeAll(async () => {
  if (!compatibilityDate) throw new Error('wrangler.toml has no compatibility_date')
  const [plain, minified] = await Promise.all([build(workerBuild(false)), build(workerBuild(true))])
  script = plain.outputFiles[0]!.text
  minifiedGzipBytes = gzipSync(minified.outputFiles[0]!.contents, { level: 9 }).length
  const bindings = {
    MPP_SECRET: secret,
    TEMPO_RPC_URL: rpcUrl,
    TEMPO_CHAIN_ID: String(localChainId),
    MPP_CURRENCY: pathUsd,
  }
  const worker = { modules: true, script, compatibilityDate }
  mf = new Miniflare({
    workers: [
      { ...worker, name: 'memory', bindings: { ...bindings, MPP_RECIPIENT: recipient } },
      {
        ...worker,
        name: 'durable',
        bindings: { ...bindings, MPP_RECIPIENT: durableRecipient },
        durableObjects: { CLAIMS: { className: 'ClaimStoreObject', useSQLite: true } },
      },
      {
        ...worker,
        name: 'durable-peer',
        bindings: { ...bindings, MPP_RECIPIENT: durableRecipient },
        durableObjects: { CLAIMS: { className: 'ClaimStoreObject', scriptName: 'durable', useSQLite: true } },
      },
      { ...worker, name: 'misconfigured', bindings: { MPP_SECRET: secret, TEMPO_RPC_URL: rpcUrl } },
    ],
  })
  realm = (await mf.ready).host
  payer = await fundedAccount(rpcUrl, { funder: 7, amount: '10' })
})

afterAll(async () => {
  await mf?.dispose()
})

type Fetcher = (input: string, init?: RequestInit) => Promise<Response>

async function workerFetch(name: string): Promise<Fetcher> {
  // Miniflare's Fetcher type comes from its own workers types; the call itself is plain fetch.
  const worker = (await mf.getWorker(name)) as unknown as { fetch: Fetcher }
  return (input, init) => worker.fetch(input, init)
}

function payingClient(fetch: Fetcher, mode: 'pull' | 'push') {
  return Mppx.create({
    polyfill: false,
    methods: [
      tempoClient.charge({
        account: payer,
        mode,
        getClient: () => createClient({ chain: localChain(rpcUrl), transport: http(rpcUrl) }),
      }),
    ],
    fetch: ((input: RequestInfo | URL, init?: RequestInit) => fetch(String(input), init)) as typeof globalThis.fetch,
  })
}

/** Asks for a challenge and has the mppx client pay it; returns the Authorization value. */
async function credentialFor(fetch: Fetcher, mode: 'pull' | 'push', url = 'http://worker.test/paid'): Promise<string> {
  const first = await fetch(url)
  expect(first.status).toBe(402)
  return payingClient(fetch, mode).createCredential(first)
}

describe('bundle', () => {
  test('bundles for workerd without any node: import (the guard rejects one when present)', async () => {
    expect(script.length).toBeGreaterThan(0)
    expect(script).not.toMatch(nodeImport)
    expect(script).toContain('ClaimStoreObject')
    // The guard is what keeps node: out; prove it refuses a module that imports one.
    const bad = build({
      ...workerBuild(false),
      entryPoints: undefined,
      stdin: { contents: `import { createHash } from 'node:crypto'; export default createHash`, resolveDir: here('.') },
    })
    await expect(bad).rejects.toThrow(/node:crypto" is a Node built-in/)
    const bare = build({
      ...workerBuild(false),
      entryPoints: undefined,
      stdin: { contents: `import { Buffer } from 'buffer'; export default Buffer`, resolveDir: here('.') },
    })
    await expect(bare).rejects.toThrow(/"buffer" is a Node built-in/)
    console.info(`examples/cloudflare-worker bundle: ${(minifiedGzipBytes / 1024).toFixed(1)} KiB minified+gzip`)
    // Workers' free plan allows 3 MB compressed; keep well clear of it.
    expect(minifiedGzipBytes).toBeLessThan(1024 * 1024)
  })

  test('wrangler.toml: no nodejs_compat, a compatibility date, the CLAIMS Durable Object', () => {
    expect(wranglerToml).not.toMatch(/^\s*compatibility_flags\s*=.*nodejs_compat/m)
    expect(compatibilityDate).toMatch(/^\d{4}-\d{2}-\d{2}$/)
    expect(wranglerToml).toMatch(/^main\s*=\s*"src\/index\.ts"/m)
    expect(wranglerToml).toMatch(/class_name\s*=\s*"ClaimStoreObject"/)
    // Secrets are put with `wrangler secret put`, never in [vars].
    expect(wranglerToml).not.toMatch(/^\s*MPP_SECRET\s*=/m)
  })
})

test('wrangler accepts the config and bundles the Worker without nodejs_compat (deploy --dry-run)', async () => {
  const wrangler = createRequire(import.meta.url).resolve('wrangler/bin/wrangler.js')
  const outdir = mkdtempSync(join(tmpdir(), 'hono-mpp-worker-'))
  try {
    const { stdout } = await promisify(execFile)(process.execPath, [wrangler, 'deploy', '--dry-run', '--outdir', outdir], {
      cwd: here('.'),
      env: { ...process.env, WRANGLER_SEND_METRICS: 'false', CI: '1' },
      timeout: 120_000,
    })
    expect(stdout).toMatch(/env\.CLAIMS \(ClaimStoreObject\)\s+Durable Object/)
    const size = /gzip: ([\d.]+) KiB/.exec(stdout)?.[1]
    console.info(`wrangler upload size: ${size} KiB gzip`)
    const bundled = readFileSync(join(outdir, 'index.js'), 'utf8')
    expect(bundled).not.toMatch(nodeImport)
  } finally {
    rmSync(outdir, { recursive: true, force: true })
  }
})

describe('configuration from bindings', () => {
  test('a missing binding answers a 500 problem naming it; free routes still work', async () => {
    const fetch = await workerFetch('misconfigured')
    const free = await fetch('http://worker.test/free')
    expect(free.status).toBe(200)
    expect(await free.json()).toEqual({ message: 'free content' })
    const paid = await fetch('http://worker.test/paid')
    expect(paid.status).toBe(500)
    expect(paid.headers.get('content-type')).toBe('application/problem+json')
    expect(paid.headers.get('www-authenticate')).toBeNull()
    const problem = (await paid.json()) as { status: number; detail: string }
    expect(problem.status).toBe(500)
    expect(problem.detail).toContain('MPP_RECIPIENT is not set')
    expect(problem.detail).not.toContain('MPP_SECRET')
    expect(problem.detail).not.toContain(secret)
  })
})

describe.each([
  { variant: 'in-memory claims', worker: 'memory', to: () => recipient },
  { variant: 'Durable Object claims', worker: 'durable', to: () => durableRecipient },
])('paid route, $variant', ({ worker, to }) => {
  test.each(['pull', 'push'] as const)('C1 C6 C9 T2 T4 T5: %s — 402, then 200 with a receipt, recipient +0.01 exactly, replay refused', async (mode) => {
    const fetch = await workerFetch(worker)
    const before = await balanceOf(rpcUrl, to())

    const unpaid = await fetch('http://worker.test/paid')
    expect(unpaid.status).toBe(402)
    expect(unpaid.headers.get('cache-control')).toBe('no-store')
    const [challenge] = parseChallenges(unpaid.headers.get('www-authenticate')!)
    expect(challenge).toMatchObject({ method: 'tempo', intent: 'charge', realm })
    expect(decodeJson(challenge!.request)).toMatchObject({
      amount: '10000',
      currency: getAddress(pathUsd),
      recipient: to(),
      methodDetails: { chainId: localChainId },
    })

    const authorization = await payingClient(fetch, mode).createCredential(unpaid)
    const paid = await fetch('http://worker.test/paid', { headers: { authorization } })
    const body = (await paid.json()) as { message: string; payer: string; reference: string }
    expect(paid.status, JSON.stringify(body)).toBe(200)
    expect(body.message).toBe('paid content')
    expect(body.payer.toLowerCase()).toBe(payer.address.toLowerCase())
    const receipt = parseReceipt(paid.headers.get('payment-receipt')!)
    expect(receipt).toMatchObject({ status: 'success', method: 'tempo', reference: body.reference })
    expect(receipt.reference).toMatch(/^0x[0-9a-f]{64}$/)
    expect(Math.abs(Date.parse(receipt.timestamp) - Date.now())).toBeLessThan(60_000)
    expect(paid.headers.get('cache-control')).toBe('private')
    expect((await balanceOf(rpcUrl, to())) - before).toBe(10_000n)

    const replay = await fetch('http://worker.test/paid', { headers: { authorization } })
    expect(replay.status).toBe(402)
    expect(replay.headers.get('payment-receipt')).toBeNull()
    const problem = (await replay.json()) as { type: string; detail: string }
    expect(problem.type).toMatch(/\/(invalid-challenge|verification-failed)$/)
    expect(problem.detail).not.toContain(authorization.slice(8, 40))
    expect((await balanceOf(rpcUrl, to())) - before).toBe(10_000n)
  })

  test('the mppx client pays through its own fetch wrapper (402 handled automatically)', async () => {
    const fetch = await workerFetch(worker)
    const before = await balanceOf(rpcUrl, to())
    const response = await payingClient(fetch, 'pull').fetch('http://worker.test/paid')
    expect(response.status).toBe(200)
    expect(parseReceipt(response.headers.get('payment-receipt')!).status).toBe('success')
    expect((await balanceOf(rpcUrl, to())) - before).toBe(10_000n)
  })
})

describe('Durable Object claims across isolates', () => {
  test.each(['pull', 'push'] as const)('C9: one %s credential sent concurrently to two Workers sharing CLAIMS → one delivery, one payment', async (mode) => {
    const [durable, peer] = await Promise.all([workerFetch('durable'), workerFetch('durable-peer')])
    const before = await balanceOf(rpcUrl, durableRecipient)
    const authorization = await credentialFor(durable, mode)
    const attempts = Array.from({ length: 6 }, (_, i) => (i % 2 ? peer : durable)('http://worker.test/paid', { headers: { authorization } }))
    const responses = await Promise.all(attempts)
    const statuses = responses.map((r) => r.status)
    const delivered = responses.filter((r) => r.status === 200)
    expect(delivered, `statuses: ${statuses.join(', ')}`).toHaveLength(1)
    expect(delivered[0]!.headers.get('payment-receipt')).not.toBeNull()
    for (const refused of responses.filter((r) => r.status !== 200)) {
      expect(refused.headers.get('payment-receipt')).toBeNull()
      expect([402, 409]).toContain(refused.status)
    }
    await Promise.all(responses.map((r) => r.body?.cancel()))
    expect((await balanceOf(rpcUrl, durableRecipient)) - before).toBe(10_000n)
  })
})
