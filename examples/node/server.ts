/**
 * `npm run serve`: the example server on @hono/node-server, configured by environment
 * (see config.ts). Pointed at a public Tempo testnet RPC it works unchanged.
 */
import { serve } from '@hono/node-server'
import { type ClaimStore, combineListeners, type PaymentEventListener } from 'hono-mpp'
import { pathUsd, type RpcCall } from 'hono-mpp/tempo'
import { type Address, createClient, http } from 'viem'
import { privateKeyToAccount } from 'viem/accounts'
import { tempoModerato } from 'viem/tempo/chains'
import { createApp } from './app.js'
import { ConfigError, readEnv } from './config.js'

async function chainIdOf(rpcUrl: string): Promise<number> {
  const response = await fetch(rpcUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'eth_chainId', params: [] }),
    signal: AbortSignal.timeout(10_000),
  })
  const body = (await response.json()) as { result?: string }
  if (!body.result) throw new Error('no chain id in the answer')
  return Number(body.result)
}

/** The host of a URL, which never carries its user, password or path (an API key may be in any of them). */
function hostOf(url: string): string {
  try {
    return new URL(url).host
  } catch {
    return 'an unparsable URL'
  }
}

/** A message without the URL it may quote (whose password or path may be a secret), nor its password. */
function redact(message: string, url: string): string {
  let text = message.replaceAll(url, hostOf(url))
  try {
    const { href, password } = new URL(url)
    text = text.replaceAll(href, hostOf(url))
    if (password.length >= 4) text = text.replaceAll(password, '…').replaceAll(decodeURIComponent(password), '…')
  } catch {}
  return text
}

async function main() {
  const env = readEnv(process.env)
  for (const line of env.ignored) console.warn(`examples/node: warning: ${line}`)
  let chainId = env.chainId
  if (chainId === undefined) {
    try {
      chainId = await chainIdOf(env.rpcUrl)
    } catch (error) {
      throw new ConfigError(
        `examples/node: cannot start: TEMPO_RPC_URL (${hostOf(env.rpcUrl)}) did not answer eth_chainId (${redact((error as Error).message, env.rpcUrl)}); set TEMPO_CHAIN_ID or fix the URL`,
      )
    }
  }
  let store: ClaimStore | undefined
  if (env.redisUrl) {
    const { createClient } = await import('redis')
    const { redisStore } = await import('hono-mpp/stores/redis')
    const client = createClient({ url: env.redisUrl })
    // The first connection must succeed (the client would otherwise retry forever, silently);
    // once connected, a lost connection is retried in the background.
    try {
      await new Promise<void>((resolve, reject) => {
        client.once('error', reject)
        client.connect().then(() => resolve(), reject)
      })
    } catch (error) {
      client.destroy()
      throw new ConfigError(
        `examples/node: cannot start: MPP_REDIS_URL (${hostOf(env.redisUrl)}) could not be reached (${redact((error as Error).message, env.redisUrl)}); start Redis or fix the URL`,
      )
    }
    client.on('error', () => {})
    const redis = redisStore({ command: (args: string[]) => client.sendCommand(args) })
    store = redis
    // A Redis that may evict claims (any maxmemory-policy but noeviction) stops start-up here.
    try {
      await redis.check()
    } catch (error) {
      throw new ConfigError(`examples/node: cannot start: MPP_REDIS_URL: ${(error as Error).message}`)
    }
  }
  // MPP_METRICS=1: payment metrics (hono-mpp/metrics over prom-client) at GET /metrics.
  let metrics: { onEvent: PaymentEventListener; onRpcCall: (call: RpcCall) => void; serve: () => Promise<{ text: string; contentType: string }> } | undefined
  if (env.metrics) {
    const { Registry } = await import('prom-client')
    const { paymentMetrics } = await import('hono-mpp/metrics')
    const registry = new Registry()
    const { onEvent, onRpcCall } = paymentMetrics({ registry })
    metrics = { onEvent, onRpcCall, serve: async () => ({ text: await registry.metrics(), contentType: registry.contentType }) }
  }
  const log: PaymentEventListener = (event) => {
    // Session vouchers are not on-chain settlements (one line per voucher would flood the log).
    if (event.type === 'settled' && event.intent !== 'session') console.log(`settled ${event.method} ${event.reference} on ${event.path}`)
    else if (event.type === 'rejected' && event.reason !== 'payment-required') console.log(`rejected ${event.path}: ${event.reason}: ${event.detail}`)
  }
  // Prepaid accounts: the ledger on DATABASE_URL's Postgres, or embedded PGlite.
  const { createLedger, fromPglite, fromPostgres, payouts } = await import('hono-mpp/accounts')
  const currency = env.currency ?? pathUsd
  let sql: Parameters<typeof createLedger>[0]['sql']
  let closeDatabase: () => Promise<void>
  if (env.databaseUrl) {
    const { default: postgres } = await import('postgres')
    const client = postgres(env.databaseUrl, { onnotice: () => {} })
    sql = fromPostgres(client)
    closeDatabase = () => client.end()
  } else {
    const { PGlite } = await import('@electric-sql/pglite')
    const db = env.pgliteDir ? new PGlite(env.pgliteDir) : new PGlite()
    sql = fromPglite(db)
    closeDatabase = () => db.close()
  }
  const operator = env.operatorKey ? privateKeyToAccount(env.operatorKey) : undefined
  const ledger = createLedger({ sql, currency, platformFeeBps: env.platformFeeBps, ...(operator && { operator: operator.address }) })
  try {
    await ledger.migrate()
  } catch (error) {
    const where = env.databaseUrl
      ? `DATABASE_URL (${hostOf(env.databaseUrl)})`
      : env.pgliteDir
        ? `MPP_PGLITE_DIR (${env.pgliteDir})`
        : 'the embedded PGlite, in memory'
    const cause = (error as Error & { cause?: Error }).cause?.message
    const reason = `${(error as Error).message}${cause ? ` (${cause})` : ''}`
    throw new ConfigError(
      `examples/node: cannot start: the accounts database at ${where} could not be prepared: ${env.databaseUrl ? redact(reason, env.databaseUrl) : reason}`,
    )
  }
  // Holds of requests that died go back after their lifetime; every instance may sweep.
  const sweeper = setInterval(() => void ledger.sweep().catch(() => {}), 30_000)
  sweeper.unref()
  let payoutRoutes: ReturnType<ReturnType<typeof payouts>['routes']> | undefined
  if (operator && env.operatorSecret) {
    const chain = { ...tempoModerato, id: chainId, rpcUrls: { default: { http: [env.rpcUrl] } } }
    const wallet = createClient({ account: operator, chain, transport: http(env.rpcUrl) })
    const p = payouts({ ledger, wallet, currency, payoutAddress: { [env.realm]: env.payoutAddress ?? env.recipient } })
    // Finish what a crash left behind before taking new payouts.
    await p
      .reconcilePayouts()
      .catch((error) => console.log(`payouts: reconcile at start-up failed, will retry on the next payout: ${(error as Error).message}`))
    payoutRoutes = p.routes({ operatorSecret: env.operatorSecret })
  }

  // Sessions: the payee key signs settlements and closes; the escrow is configured or (local chain) deployed.
  let session: ReturnType<typeof import('hono-mpp/tempo').tempoSession> | undefined
  if (env.sessionKey) {
    const { tempoSession } = await import('hono-mpp/tempo')
    const payee = privateKeyToAccount(env.sessionKey)
    // The local chain's helpers (its AlphaUSD for the payee's fees, our escrow's deployment).
    const local = chainId === 31337 ? await import('../../scripts/local-chain.js') : undefined
    let escrow: Address | undefined = env.escrow
    if (!escrow && local) {
      try {
        escrow = await local.deploySessionEscrow(env.rpcUrl, payee)
      } catch (error) {
        // viem's message carries the RPC URL and the signed transaction: only its short form.
        const reason = (error as { shortMessage?: string }).shortMessage ?? (error as Error).message
        throw new ConfigError(
          `examples/node: cannot start: MPP_SESSION_KEY's account ${payee.address} could not deploy the session escrow on the local chain (${redact(reason, env.rpcUrl)}); fund it with AlphaUSD for fees, or set MPP_ESCROW to a deployed escrow`,
        )
      }
      console.log(`session escrow deployed at ${escrow} (local chain)`)
    }
    if (!escrow)
      throw new ConfigError(
        'examples/node: cannot start: MPP_ESCROW is missing: the session escrow contract of this chain (only a local chain gets one deployed)',
      )
    session = tempoSession({
      rpcUrl: env.rpcUrl,
      chainId,
      escrow,
      account: payee,
      ...(env.currency && { currency: env.currency }),
      ...(local && { feeToken: local.alphaUsd }),
      suggestedDeposit: '1',
      ...(store && { store }),
      ...(metrics && { onRpcCall: metrics.onRpcCall }),
    })
  }
  // A payer's forced close is looked for every minute: the channel then stops serving and is
  // closed with its highest voucher inside the 15-minute grace period.
  const closes = session
    ? setInterval(() => {
        session
          .checkCloses()
          .then(({ synced }) => {
            for (const channelId of synced) console.log(`session channel ${channelId}: forced close requested on chain; synced`)
          })
          .catch((error: Error) => console.error(`session: the look for forced closes failed (${error.message}); it is retried in a minute`))
      }, 60_000)
    : undefined
  closes?.unref()

  const app = createApp({
    rpcUrl: env.rpcUrl,
    chainId,
    recipient: env.recipient,
    secret: env.secret,
    ...(env.currency && { currency: env.currency }),
    ...(env.feePayerKey && { feePayer: privateKeyToAccount(env.feePayerKey) }),
    ...(store && { store }),
    onEvent: combineListeners(log, metrics?.onEvent),
    ...(metrics && { onRpcCall: metrics.onRpcCall }),
    accounts: { ledger, realm: env.realm, topUp: { min: env.topUpMin, max: env.topUpMax }, ...(payoutRoutes && { payouts: payoutRoutes }) },
    ...(session && { session }),
  })
  if (metrics) {
    const { serve: scrape } = metrics
    app.get('/metrics', async (c) => {
      const { text, contentType } = await scrape()
      return c.body(text, 200, { 'content-type': contentType })
    })
  }
  const host = process.env.HOST || '127.0.0.1'
  const server = serve({ fetch: app.fetch, port: env.port, hostname: host }, (info) => {
    console.log(`hono-mpp example listening on http://${info.address}:${info.port} (chain ${chainId}, recipient ${env.recipient})`)
  })
  // A port taken or a HOST that is not an interface here: one line naming the variable, exit 1.
  server.once('error', (error: NodeJS.ErrnoException) => {
    const what =
      error.code === 'EADDRINUSE'
        ? `PORT ${env.port} is already in use on HOST ${host}; pick another PORT or stop what listens there`
        : `cannot listen on HOST ${host}, PORT ${env.port} (${error.code ?? error.message}); set HOST to an address of this machine (default 127.0.0.1, 0.0.0.0 for all)`
    console.error(`examples/node: cannot start: ${what}`)
    clearInterval(sweeper)
    clearInterval(closes)
    void closeDatabase().finally(() => process.exit(1))
  })
  const stop = () =>
    server.close(() => {
      clearInterval(sweeper)
      clearInterval(closes)
      void closeDatabase().finally(() => process.exit(0))
    })
  process.on('SIGINT', stop)
  process.on('SIGTERM', stop)
}

main().catch((error) => {
  // Configuration the library refuses (ConfigurationError) is one line saying what to fix, as ours.
  if (error instanceof ConfigError) console.error(error.message)
  else if ((error as Error)?.name === 'ConfigurationError') console.error(`examples/node: cannot start: ${(error as Error).message}`)
  else console.error(error)
  process.exit(1)
})
