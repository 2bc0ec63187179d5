/**
 * The adversarial suite's shop and its one invariant. A shop is a Hono app charging a few routes
 * through `mpp()` + `tempo()` on the local chain, counting every handler run. `expectRefusal`
 * checks what every attack must end in: 400/402/403 with problem JSON naming the reason, no
 * receipt, no credential or secret echoed, no handler run, no balance moved.
 */
import { Hono } from 'hono'
import { Mppx, tempo as tempoClient } from 'mppx/client'
import { type Address, createClient, type Hex, http } from 'viem'
import { generatePrivateKey, type LocalAccount, type PrivateKeyAccount, privateKeyToAccount } from 'viem/accounts'
import { sendTransactionSync } from 'viem/actions'
import { expect, inject } from 'vitest'
import { balanceOf, localChain, pathUsd } from '../../scripts/local-chain.js'
import { type Challenge, type ClaimStore, type MppOptions, mpp, type PaymentEvent, type ProblemKind } from '../../src/index.js'
import { type TempoConfig, tempo } from '../../src/tempo/index.js'
import { challengesOf } from '../helpers/http.js'
import { expectedId, jcs } from '../protocol/support.js'
import { rawRpc } from '../tempo/helpers.js'

export const secret = 'attack-suite-secret-0123456789abcdef-0123456789'
export const origin = 'http://shop.test'
export const realm = 'shop.test'
export const problemBase = 'https://paymentauth.org/problems/'

export const rpcUrl = (): string => inject('rpcUrl')
export const fresh = (): Address => privateKeyToAccount(generatePrivateKey()).address

export type ShopOptions = {
  /** Decimal amount every route charges (default "0.01"). */
  amount?: string
  /** When set, GET /cheap charges this amount instead. */
  cheap?: string
  recipient?: Address
  /** Overrides of the tempo() configuration (rpcUrl, splits, memo, feePayer, modes, ...). */
  tempo?: Partial<TempoConfig>
  secret?: string | string[]
  store?: ClaimStore
  /** Challenge lifetime in seconds. */
  expires?: number
  mpp?: Partial<MppOptions>
}

export type Shop = {
  app: Hono
  recipient: Address
  /** Handler runs, all routes together. */
  runs(): number
  events: PaymentEvent[]
  secrets: string[]
  fetch(path: string, init?: RequestInit): Promise<Response>
  /** An unpaid request: its first challenge and the 402 itself. */
  challenge(path?: string, init?: RequestInit): Promise<{ challenge: Challenge; response: Response }>
}

/**
 * Routes: GET /paid, GET /other (same price, another resource), POST and PUT /work (a body,
 * so a digest), GET /after (`settle: 'after'`; `?fail=1` makes the handler answer 500), and GET
 * /cheap when `cheap` is set.
 */
export function shop(options: ShopOptions = {}): Shop {
  const recipient = options.recipient ?? fresh()
  const amount = options.amount ?? '0.01'
  const method = tempo({ rpcUrl: rpcUrl(), chainId: 31337, recipient, ...options.tempo } as TempoConfig)
  const events: PaymentEvent[] = []
  const secrets = Array.isArray(options.secret) ? options.secret : [options.secret ?? secret]
  const pay = mpp({
    secret: secrets,
    methods: [method],
    ...(options.store && { store: options.store }),
    ...(options.expires !== undefined && { expires: options.expires }),
    ...options.mpp,
    onEvent: (event) => events.push(event),
  })
  let runs = 0
  const deliver = (c: { req: { path: string }; get(key: 'payment'): { payer: string | undefined }; json(value: unknown): Response }) => {
    runs++
    return c.json({ delivered: c.req.path, payer: c.get('payment').payer })
  }
  const app = new Hono()
  app.onError((_error, c) => c.json({ error: 'handler failed' }, 500))
  app.get('/paid', pay.charge({ amount }), (c) => deliver(c))
  app.get('/other', pay.charge({ amount }), (c) => deliver(c))
  app.on(['POST', 'PUT'], '/work', pay.charge({ amount }), (c) => deliver(c))
  if (options.cheap !== undefined) app.get('/cheap', pay.charge({ amount: options.cheap }), (c) => deliver(c))
  if (options.tempo?.modes?.includes('push') !== true || options.tempo.modes.includes('pull'))
    app.get('/after', pay.charge({ amount, settle: 'after' }), (c) => {
      if (c.req.query('fail')) {
        runs++
        return c.json({ error: 'the work failed' }, 500)
      }
      return deliver(c)
    })
  const fetch = (path: string, init: RequestInit = {}) => Promise.resolve(app.request(origin + path, init))
  return {
    app,
    recipient,
    runs: () => runs,
    events,
    secrets,
    fetch,
    async challenge(path = '/paid', init = {}) {
      const response = await fetch(path, init)
      expect(response.status).toBe(402)
      const [challenge] = challengesOf(response)
      return { challenge: challenge!, response }
    },
  }
}

/** Headers for a paid retry of `init`, with `authorization` set. */
export function withCredential(authorization: string, init: RequestInit = {}): RequestInit {
  return { ...init, headers: { ...(init.headers as Record<string, string> | undefined), authorization } }
}

/** The reference client (mppx) paying a 402 of `s`, in `mode`: the Authorization value it sends. */
export async function mppxPays(s: Shop, account: LocalAccount, mode: 'pull' | 'push', path = '/paid', init: RequestInit = {}): Promise<string> {
  const url = rpcUrl()
  const client = Mppx.create({
    polyfill: false,
    methods: [tempoClient.charge({ account, getClient: () => createClient({ chain: localChain(url), transport: http(url) }) })],
  })
  const { response } = await s.challenge(path, init)
  return client.createCredential(response, { mode })
}

export type Wire = {
  challenge: Record<string, unknown> & { id: string; request: string; expires?: string }
  payload: Record<string, unknown>
  source?: string
}

/** The JSON inside an `Authorization: Payment` value. */
export function wireOf(authorization: string): Wire {
  return JSON.parse(Buffer.from(authorization.slice('Payment '.length), 'base64url').toString('utf8')) as Wire
}

export function authorizationOf(wire: unknown): string {
  return `Payment ${Buffer.from(JSON.stringify(wire), 'utf8').toString('base64url')}`
}

export function requestJson(encoded: string): Record<string, unknown> & { methodDetails: Record<string, unknown> } {
  return JSON.parse(Buffer.from(encoded, 'base64url').toString('utf8'))
}

export function encodeRequest(request: unknown): string {
  return Buffer.from(jcs(request), 'utf8').toString('base64url')
}

/**
 * A challenge id minted with the server's own secret (node:crypto, independent of src/): what
 * only someone holding the secret could produce. Used to reach the checks that come after the
 * binding (no `expires`, expired) with an otherwise genuine challenge.
 */
export function mint(challenge: Omit<Challenge, 'id'>, key = secret): Challenge {
  return { ...challenge, id: expectedId(key, challenge) }
}

/** An MPP proof (EIP-712, domain {name "MPP", version "3", chainId}) over a challenge, written from the draft. */
export function proofOf(
  signer: PrivateKeyAccount,
  challenge: { id: string; realm: string },
  options: { chainId?: number; account?: `0x${string}` } = {},
): Promise<Hex> {
  return signer.signTypedData({
    domain: { name: 'MPP', version: '3', chainId: options.chainId ?? 31337 },
    types: {
      Proof: [
        { name: 'account', type: 'address' },
        { name: 'challengeId', type: 'string' },
        { name: 'realm', type: 'string' },
      ],
    },
    primaryType: 'Proof',
    message: { account: options.account ?? signer.address, challengeId: challenge.id, realm: challenge.realm },
  })
}

/** A sender's `source` DID. */
export const source = (address: string, chainId = 31337) => `did:pkh:eip155:${chainId}:${address}`

/** The sponsor's fee-token balance as a `Watch` (read when watched: the sponsor is funded in beforeAll). */
export function sponsorFeeBalance(sponsor: () => { address: Address }, token: Address): Watch {
  return {
    get address() {
      return sponsor().address
    },
    token,
    label: 'sponsor fee token',
  }
}

export type Watch = { address: Address; token?: Address; label?: string }

async function balances(watch: readonly Watch[]): Promise<Record<string, bigint>> {
  const url = rpcUrl()
  const entries = await Promise.all(
    watch.map(async (w, i) => [w.label ?? `${i}:${w.address}:${w.token ?? pathUsd}`, await balanceOf(url, w.address, w.token ?? pathUsd)] as const),
  )
  return Object.fromEntries(entries)
}

export type Refusal = { status: 400 | 402 | 403; kind: ProblemKind; detail: RegExp }
export type ProblemBody = { type: string; title: string; status: number; detail: string; challengeId?: string }

/**
 * The invariant of every attack. Runs `send` and checks: the expected 400/402/403 (never 2xx or
 * 5xx), `application/problem+json` of the expected type whose `detail` names the reason, a
 * fresh challenge on a 402, no `Payment-Receipt`, no handler run, none of the watched balances
 * (the shop's recipient always) moved, and no credential or secret in the answer or the events.
 */
export async function expectRefusal(
  s: Shop,
  send: () => Promise<Response>,
  expected: Refusal,
  options: { watch?: Watch[]; credentials?: string[] } = {},
): Promise<ProblemBody> {
  const watch: Watch[] = [{ address: s.recipient, label: 'recipient' }, ...(options.watch ?? [])]
  const before = await balances(watch)
  const runs = s.runs()
  const events = s.events.length
  const response = await send()
  const text = await response.text()
  expect(response.status, text).toBe(expected.status)
  expect(response.headers.get('content-type')).toBe('application/problem+json')
  expect(response.headers.get('payment-receipt')).toBeNull()
  const body = JSON.parse(text) as ProblemBody
  expect(body.type).toBe(problemBase + expected.kind)
  expect(body.status).toBe(expected.status)
  expect(body.detail).toMatch(expected.detail)
  if (expected.status === 402) {
    const challenges = challengesOf(response)
    expect(challenges.length).toBeGreaterThan(0)
    expect(body.challengeId).toBe(challenges[0]!.id)
  }
  expect(s.runs()).toBe(runs)
  expect(await balances(watch)).toEqual(before)
  // Nothing secret in the answer nor in what the server told its observers.
  const told = text + JSON.stringify([...response.headers]) + JSON.stringify(s.events.slice(events))
  const hidden = [...s.secrets]
  for (const credential of options.credentials ?? []) {
    const token = credential.replace(/^Payment /, '')
    hidden.push(token)
    const payload = safeWire(credential)?.payload
    for (const value of Object.values(payload ?? {})) if (typeof value === 'string' && value.length > 80) hidden.push(value.slice(2, 80))
  }
  for (const value of hidden) expect(told).not.toContain(value)
  return body
}

function safeWire(credential: string): Wire | undefined {
  try {
    return wireOf(credential)
  } catch {
    return undefined
  }
}

/** A paid request must have delivered: 200 with a receipt. */
export async function expectDelivered(response: Response): Promise<void> {
  const text = await response.text()
  expect(response.status, text).toBe(200)
  expect(response.headers.get('payment-receipt')).toBeTruthy()
}

/** Broadcasts a signed transaction as a pushing client would; its hash and on-chain status. */
export async function broadcast(raw: Hex): Promise<{ hash: Hex; status: 'success' | 'reverted' }> {
  const receipt = (await rawRpc(rpcUrl(), 'eth_sendRawTransactionSync', [raw])) as { transactionHash: Hex; status: string }
  return { hash: receipt.transactionHash, status: receipt.status === '0x1' ? 'success' : 'reverted' }
}

/**
 * Deploys a contract that emits any log it is told to: calldata of 4 words emits LOG3 (topics =
 * words 0..2, data = word 3), 5 words LOG4 (topics = words 0..3, data = word 4). With it, a
 * receipt carries Transfer/TransferWithMemo logs identical to a real token's, from another
 * address.
 */
export async function deployLogEmitter(deployer: LocalAccount): Promise<Address> {
  const runtime =
    '36600060003736' + // calldatacopy(0, 0, calldatasize); calldatasize
    '6080146' +
    '01f57' + // == 0x80 ? jump to LOG3 : fall through
    '606051604051602051600051602060' +
    '80a400' + // log4(0x80, 0x20, w0, w1, w2, w3); stop
    '5b604051602051600051602060' +
    '60a300' // log3(0x60, 0x20, w0, w1, w2); stop
  const length = (runtime.length / 2).toString(16).padStart(2, '0')
  const initcode = `0x60${length}80600b6000396000f3${runtime}` as Hex
  const url = rpcUrl()
  const client = createClient({ chain: localChain(url), transport: http(url), account: deployer })
  // A create needs the protocol nonce (not an expiring one); the local node under-estimates its gas.
  const receipt = await sendTransactionSync(client, { account: deployer, calls: [{ data: initcode }], gas: 3_000_000n } as never)
  const address = (receipt as { contractAddress?: Address | null }).contractAddress
  if (receipt.status !== 'success' || !address) throw new Error('the log emitter was not deployed')
  return address
}
