/**
 * `npm run demo`: the whole story on a local Tempo chain, with nothing to install by hand.
 *
 * Starts anvil in Tempo mode, starts the example server (`examples/node/server.ts`, the same one
 * `npm run serve` runs), funds a payer, and pays with the reference client (mppx) in each mode:
 * pull, push, sponsored pull, and settle-after where the handler fails (nothing is charged) and
 * succeeds. Then the accounts act (top up a prepaid balance, spend it with an API key, a failed
 * call costs nothing, the operator's earnings paid out on chain) and the session act (open a
 * payment channel, pay 20 requests by voucher, a metered stream, close: balances before and
 * after). Prints a trace a person can follow, stops everything it started, exits 0 — or non-zero
 * with the reason when any step fails.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { Mppx, tempo } from 'mppx/client'
import type { Address, Hex } from 'viem'
import { createClient, formatUnits, http } from 'viem'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { parseChallenges, parseReceipt } from '../src/index.js'
import { decodeJson, fromBase64url } from '../src/protocol/encoding.js'
import { alphaUsd, balanceOf, freePort, fund, fundedAccount, type LocalChain, localChain, pathUsd, sessionPayerClient, startLocalChain } from './local-chain.js'

const color = process.stdout.isTTY && !process.env.NO_COLOR
const paint = (code: string) => (text: string) => (color ? `\x1b[${code}m${text}\x1b[0m` : text)
const bold = paint('1')
const dim = paint('2')
const green = paint('32')
const red = paint('31')
const cyan = paint('36')

const log = (text = '') => console.log(text)
const step = (text: string) => log(`\n${bold(cyan(`▶ ${text}`))}`)
const usd = (amount: bigint) => `${formatUnits(amount, 6)} pathUSD`

/** 32 random bytes as hex, for the server's secrets. */
const randomHex32 = () => Array.from(crypto.getRandomValues(new Uint8Array(32)), (b) => b.toString(16).padStart(2, '0')).join('')

class DemoError extends Error {}
function check(condition: unknown, message: string): asserts condition {
  if (!condition) throw new DemoError(message)
}

let chain: LocalChain | undefined
let server: ChildProcess | undefined

async function startServer(env: Record<string, string>): Promise<string> {
  const port = await freePort()
  const root = fileURLToPath(new URL('..', import.meta.url))
  const tsx = fileURLToPath(new URL('../node_modules/tsx/dist/cli.mjs', import.meta.url))
  server = spawn(process.execPath, [tsx, 'examples/node/server.ts'], {
    cwd: root,
    env: { ...process.env, ...env, PORT: String(port) },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let output = ''
  server.stdout?.on('data', (chunk) => {
    output += String(chunk)
    for (const line of String(chunk).trim().split('\n')) if (line) log(dim(`  [server] ${line}`))
  })
  server.stderr?.on('data', (chunk) => (output += String(chunk)))
  const url = `http://127.0.0.1:${port}`
  const deadline = Date.now() + 30_000
  for (;;) {
    if (server.exitCode !== null) throw new DemoError(`the example server exited: ${output.trim()}`)
    try {
      const response = await fetch(`${url}/free`)
      if (response.ok) return url
    } catch {}
    if (Date.now() > deadline) throw new DemoError(`the example server did not start within 30 s: ${output.trim()}`)
    await new Promise((r) => setTimeout(r, 150))
  }
}

function showChallenge(response: Response) {
  const header = response.headers.get('www-authenticate')
  check(header, `expected a WWW-Authenticate challenge on the ${response.status}`)
  for (const challenge of parseChallenges(header)) {
    const request = decodeJson(challenge.request) as Record<string, unknown>
    log(`  ${bold('402 challenge')} id=${challenge.id.slice(0, 16)}… method=${challenge.method} intent=${challenge.intent} expires=${challenge.expires}`)
    log(`    request: ${JSON.stringify(request)}`)
  }
}

function showCredential(authorization: string) {
  const wire = JSON.parse(fromBase64url(authorization.replace(/^Payment\s+/i, ''))) as {
    payload: { type: string; hash?: string; signature?: string }
    source?: string
  }
  const { type } = wire.payload
  const what =
    type === 'transaction'
      ? `signed transaction (${wire.payload.signature!.slice(0, 4)} envelope, ${(wire.payload.signature!.length - 2) / 2} bytes)`
      : type === 'hash'
        ? `hash of a transaction the client already sent: ${wire.payload.hash}`
        : type
  log(`  ${bold('credential')} type=${type}: ${what}`)
  if (wire.source) log(`    source: ${wire.source}`)
}

async function main() {
  step('Starting a local Tempo chain (anvil --network tempo)')
  chain = await startLocalChain()
  const { rpcUrl } = chain
  log(`  rpc ${rpcUrl}, chain id 31337`)

  // The recipient is the operator's wallet: it receives every payment (top-ups included) and pays
  // the developers' earnings out.
  const operatorKey = generatePrivateKey()
  const recipient = privateKeyToAccount(operatorKey).address
  await fund(rpcUrl, recipient, { amount: '1', funder: 8, tokens: [alphaUsd] })
  const developer = privateKeyToAccount(generatePrivateKey()).address
  const sessionKey = generatePrivateKey()
  const payee = privateKeyToAccount(sessionKey)
  await fund(rpcUrl, payee.address, { amount: '5', funder: 8, tokens: [alphaUsd] })
  const operatorSecret = randomHex32()
  const realm = 'demo.hono-mpp'
  const feePayerKey = generatePrivateKey()
  const feePayer = privateKeyToAccount(feePayerKey)
  await fund(rpcUrl, feePayer.address, { amount: '50', funder: 8 })
  const payer = await fundedAccount(rpcUrl, { amount: '10', funder: 9 })
  log(`  recipient ${recipient}`)
  log(`  payer     ${payer.address} (funded with 10 pathUSD and 10 AlphaUSD)`)
  log(`  fee payer ${feePayer.address} (funded with 50 pathUSD and 50 AlphaUSD for fees)`)

  step('Starting the example server (examples/node, as `npm run serve` does)')
  const secret = randomHex32()
  const url = await startServer({
    TEMPO_RPC_URL: rpcUrl,
    MPP_RECIPIENT: recipient,
    MPP_SECRET: secret,
    MPP_FEE_PAYER_KEY: feePayerKey,
    MPP_REALM: realm,
    MPP_PLATFORM_FEE_BPS: '500',
    MPP_OPERATOR_KEY: operatorKey,
    MPP_OPERATOR_SECRET: operatorSecret,
    MPP_PAYOUT_ADDRESS: developer,
    MPP_SESSION_KEY: sessionKey,
  })
  log(`  listening on ${url}`)

  const getClient = () => createClient({ chain: localChain(rpcUrl), transport: http(rpcUrl) })
  const client = Mppx.create({ polyfill: false, methods: [tempo.charge({ account: payer, getClient })] })

  const pay = async (title: string, path: string, mode: 'pull' | 'push', init: RequestInit = {}, expectCharged = true) => {
    step(title)
    const before = {
      payer: await balanceOf(rpcUrl, payer.address),
      recipient: await balanceOf(rpcUrl, recipient),
      feePayer: (await balanceOf(rpcUrl, feePayer.address, pathUsd)) + (await balanceOf(rpcUrl, feePayer.address, alphaUsd)),
    }
    log(`  ${init.method ?? 'GET'} ${path} without payment`)
    const unpaid = await fetch(url + path, init)
    log(`  ← ${unpaid.status} ${unpaid.headers.get('content-type')}`)
    check(unpaid.status === 402, `expected 402 from ${path}, got ${unpaid.status}`)
    showChallenge(unpaid)
    const authorization = await client.createCredential(unpaid, { mode })
    showCredential(authorization)
    log(`  ${init.method ?? 'GET'} ${path} with Authorization: Payment …`)
    const paid = await fetch(url + path, { ...init, headers: { ...(init.headers as Record<string, string>), authorization } })
    const body = await paid.text()
    log(`  ← ${paid.status} ${body}`)
    const receiptHeader = paid.headers.get('payment-receipt')
    const after = {
      payer: await balanceOf(rpcUrl, payer.address),
      recipient: await balanceOf(rpcUrl, recipient),
      feePayer: (await balanceOf(rpcUrl, feePayer.address, pathUsd)) + (await balanceOf(rpcUrl, feePayer.address, alphaUsd)),
    }
    if (expectCharged) {
      check(paid.status === 200, `expected 200 from the paid ${path}, got ${paid.status}: ${body}`)
      check(receiptHeader, 'expected a Payment-Receipt header on the 200')
      const receipt = parseReceipt(receiptHeader)
      log(`  ${bold('receipt')} ${JSON.stringify(receipt)}`)
      log(`  ${bold('transaction')} ${receipt.reference}`)
      check(after.recipient - before.recipient === 10_000n, `recipient should have received exactly 0.01, got ${usd(after.recipient - before.recipient)}`)
    } else {
      check(paid.status !== 200 && !receiptHeader, 'expected a failure without a receipt')
      check(after.recipient === before.recipient && after.payer === before.payer, 'nothing should have moved')
    }
    log(`  balances: payer ${usd(before.payer)} → ${usd(after.payer)}, recipient ${usd(before.recipient)} → ${usd(after.recipient)}`)
    const replay = await fetch(url + path, { ...init, headers: { ...(init.headers as Record<string, string>), authorization } })
    const replayBody = (await replay.json().catch(() => ({}))) as { detail?: string }
    log(
      expectCharged
        ? `  replaying the same credential ← ${replay.status} ${replayBody.detail ?? ''}`
        : `  replaying the same credential ← ${replay.status}: it was never spent (the claim was released), so it may be tried again, and the failing handler is again not charged`,
    )
    if (expectCharged) check(replay.status === 402, `a replay must be refused, got ${replay.status}`)
    else check((await balanceOf(rpcUrl, recipient)) === before.recipient, 'retrying the failing handler must not charge either')
    return { before, after }
  }

  await pay('Pull: the client signs a transfer, the server broadcasts it', '/paid', 'pull')
  await pay('Push: the client broadcasts the transfer itself and sends its hash', '/paid', 'push')
  const sponsored = await pay('Sponsored pull: the server co-signs as fee payer and pays the fee', '/paid-sponsored', 'pull')
  check(sponsored.before.payer - sponsored.after.payer === 10_000n, 'a sponsored payer pays only the amount')
  log(
    `  ${green('the payer paid exactly 0.01 and no fee; the fee payer spent')} ${formatUnits(sponsored.before.feePayer - sponsored.after.feePayer, 6)} USD in fees`,
  )
  await pay(
    'Settle after: the handler fails, so nothing is charged',
    '/paid-after',
    'pull',
    { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"fail":true}' },
    false,
  )
  await pay('Settle after: the handler succeeds, then the payment settles', '/paid-after', 'pull', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: '{"fail":false}',
  })

  await accountsAct(url, { rpcUrl, client, realm, operatorSecret, developer })
  await sessionAct(url, { rpcUrl, payee: payee.address })

  log(
    `\n${bold(green('✔ demo complete: every mode paid, receipts verified, replays refused, a failed handler charged nothing; a prepaid key spent and paid out; a session paid by vouchers and closed'))}`,
  )
}

type CredentialClient = { createCredential(response: Response, context?: { mode?: 'pull' | 'push' }): Promise<string> }

/** Prepaid accounts: top up with a wallet, spend with an API key, earnings paid out on chain. */
async function accountsAct(
  url: string,
  { rpcUrl, client, realm, operatorSecret, developer }: { rpcUrl: string; client: CredentialClient; realm: string; operatorSecret: string; developer: Address },
) {
  step('Accounts: top up a prepaid balance of 1.00 with the reference client')
  const topUpInit = { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"amount":"1.00"}' }
  const unpaid = await fetch(`${url}/account/top-up`, topUpInit)
  log(`  POST /account/top-up {"amount":"1.00"} ← ${unpaid.status}`)
  check(unpaid.status === 402, `expected 402 from the top-up, got ${unpaid.status}`)
  showChallenge(unpaid)
  const authorization = await client.createCredential(unpaid, { mode: 'pull' })
  const paid = await fetch(`${url}/account/top-up`, { ...topUpInit, headers: { ...topUpInit.headers, authorization } })
  const topUp = (await paid.json()) as { balance?: string; apiKey?: string }
  check(
    paid.status === 200 && topUp.apiKey && topUp.balance === '1.00',
    `expected 200 with a balance of 1.00 and an API key, got ${paid.status} ${JSON.stringify({ ...topUp, apiKey: topUp.apiKey ? '…' : undefined })}`,
  )
  const apiKey = topUp.apiKey
  log(`  ← 200 balance ${topUp.balance}, API key ${apiKey.slice(0, 13)}… (shown once, stored only as its hash)`)

  const balance = async () => {
    const response = await fetch(`${url}/account`, { headers: { authorization: `Bearer ${apiKey}` } })
    check(response.status === 200, `GET /account answered ${response.status}`)
    return ((await response.json()) as { balance: string }).balance
  }
  step('Accounts: call GET /metered (0.01) with the key, no wallet needed')
  for (let i = 1; i <= 3; i++) {
    const response = await fetch(`${url}/metered`, { headers: { authorization: `Bearer ${apiKey}` } })
    check(response.status === 200, `GET /metered with the key answered ${response.status}`)
    log(`  GET /metered with Authorization: Bearer … ← 200; balance now ${await balance()}`)
  }
  check((await balance()) === '0.97', 'three calls at 0.01 should leave 0.97')
  const failed = await fetch(`${url}/metered-after`, {
    method: 'POST',
    headers: { 'x-api-key': apiKey, 'content-type': 'application/json' },
    body: '{"fail":true}',
  })
  log(`  POST /metered-after {"fail":true} with X-API-Key ← ${failed.status}; balance still ${await balance()} ${green('(a failed call costs nothing)')}`)
  check(failed.status === 500 && (await balance()) === '0.97', 'a failing call must cost nothing')

  step("Accounts: the operator's earnings, paid out on chain to the developer")
  const operator = { authorization: `Bearer ${operatorSecret}`, 'content-type': 'application/json' }
  const earnings = (await (await fetch(`${url}/operator/earnings/${realm}`, { headers: operator })).json()) as Record<string, string>
  log(
    `  GET /operator/earnings/${realm} ← accrued ${usd(BigInt(earnings.accrued ?? '0'))} (base units ${earnings.accrued}): 0.03 spent, less the 5% platform fee`,
  )
  const before = await balanceOf(rpcUrl, developer)
  const payout = await fetch(`${url}/operator/payouts`, { method: 'POST', headers: operator, body: JSON.stringify({ realm }) })
  const result = (await payout.json()) as { status?: string; txHash?: Hex; amount?: string; id?: string }
  check(payout.ok && result.status === 'paid' && result.txHash, `expected a paid payout, got ${payout.status} ${JSON.stringify(result)}`)
  const received = (await balanceOf(rpcUrl, developer)) - before
  log(`  POST /operator/payouts ← ${payout.status} ${result.status}, id ${result.id}`)
  log(`  ${bold('transaction')} ${result.txHash} (transferWithMemo, memo = the payout id)`)
  log(`  developer ${developer} received ${usd(received)}`)
  check(received === 28_500n, `the developer should receive 0.0285 (0.03 less 5%), got ${usd(received)}`)
}

/** Sessions: open a channel, pay 20 requests by voucher, a metered stream, close. */
async function sessionAct(url: string, { rpcUrl, payee }: { rpcUrl: string; payee: Address }) {
  step('Session: open a payment channel, pay 20 requests by voucher, stream, close')
  const payer = await fundedAccount(rpcUrl, { amount: '5', funder: 9 })
  const unpaid = await fetch(`${url}/session`)
  const offer = parseChallenges(unpaid.headers.get('www-authenticate') ?? '').find((challenge) => challenge.intent === 'session')
  check(offer, 'GET /session should offer a session challenge')
  const escrow = (decodeJson(offer.request) as { methodDetails?: { escrowContract?: Address } }).methodDetails?.escrowContract
  check(escrow, 'the session offer should name its escrow')
  log(`  escrow ${escrow}; payer ${payer.address}; payee ${payee}`)
  const before = { payer: await balanceOf(rpcUrl, payer.address), payee: await balanceOf(rpcUrl, payee) }
  const manager = tempo.sessionLegacy({ account: payer, client: sessionPayerClient(rpcUrl) as never, escrowContract: escrow, maxDeposit: '1' })
  for (let i = 1; i <= 20; i++) {
    const response = await manager.fetch(`${url}/session`)
    check(response.status === 200, `GET /session #${i} answered ${response.status}`)
    const receipt = response.receipt as { spent?: string; units?: number } | undefined
    if (i === 1 || i === 20)
      log(`  GET /session #${i} ← 200 ${i === 1 ? '(opened the channel on chain, then a voucher)' : '(a voucher: no chain call)'}; spent ${receipt?.spent}`)
  }
  let chunks = 0
  for await (const _ of await manager.sse(`${url}/stream`)) chunks++
  log(`  GET /stream ← ${chunks} chunks at 0.0001, each beyond the first paid by a voucher sent mid-stream`)
  const closed = await manager.close()
  check(closed?.txHash, 'the close should return its transaction')
  log(`  close ← ${bold('transaction')} ${closed.txHash}`)
  const after = { payer: await balanceOf(rpcUrl, payer.address), payee: await balanceOf(rpcUrl, payee) }
  const captured = after.payee - before.payee
  log(`  balances: payer ${usd(before.payer)} → ${usd(after.payer)}, payee ${usd(before.payee)} → ${usd(after.payee)}`)
  check(captured === 20n * 1_000n + BigInt(chunks) * 100n, `the payee should capture exactly what was spent, got ${usd(captured)}`)
  // The payer also paid the fee of its own open transaction (in pathUSD here); everything else of the deposit came back.
  const fees = before.payer - after.payer - captured
  check(fees >= 0n && fees < 10_000n, `the payer should pay what the payee captured plus its open's fee (< 0.01); paid ${usd(before.payer - after.payer)}`)
  log(`  the payer paid ${usd(captured)} for what it used plus ${usd(fees)} in fees for its open transaction`)
  log(`  ${green('the payee captured exactly what was spent; the rest of the 1.00 deposit went back to the payer')}`)
}

async function stopAll() {
  if (server && server.exitCode === null) {
    server.kill('SIGTERM')
    await new Promise((r) => setTimeout(r, 200))
    if (server.exitCode === null) server.kill('SIGKILL')
  }
  await chain?.stop()
}

main()
  .then(async () => {
    await stopAll()
    process.exit(0)
  })
  .catch(async (error) => {
    console.error(`\n${red(bold('✘ demo failed:'))} ${error instanceof DemoError ? error.message : ((error as Error).stack ?? error)}`)
    await stopAll()
    process.exit(1)
  })
