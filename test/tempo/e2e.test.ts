/**
 * End to end: the reference client (`mppx/client`) pays a Hono app guarded by
 * `mpp({ methods: [tempo(...)] })`, on the local Tempo chain, in every mode.
 */
import { Hono } from 'hono'
import { Mppx, tempo as mppxTempo } from 'mppx/client'
import { createClient, http } from 'viem'
import { generatePrivateKey, type LocalAccount, privateKeyToAccount } from 'viem/accounts'
import { beforeAll, describe, expect, inject, test } from 'vitest'
import { alphaUsd, balanceOf, fundedAccount, localChain, pathUsd } from '../../scripts/local-chain.js'
import { mpp } from '../../src/index.js'
import { parseChallenges } from '../../src/protocol/challenge.js'
import { decodeJson } from '../../src/protocol/encoding.js'
import { parseReceipt } from '../../src/protocol/receipt.js'
import { tempo } from '../../src/tempo/index.js'

const funder = 4
let rpcUrl: string
let payer: Awaited<ReturnType<typeof fundedAccount>>
let sponsor: Awaited<ReturnType<typeof fundedAccount>>
const recipient = privateKeyToAccount(generatePrivateKey()).address
const sponsoredRecipient = privateKeyToAccount(generatePrivateKey()).address
let app: Hono

beforeAll(async () => {
  rpcUrl = inject('rpcUrl')
  payer = await fundedAccount(rpcUrl, { funder, amount: '20' })
  sponsor = await fundedAccount(rpcUrl, { funder, amount: '20', tokens: [alphaUsd] })
  const pay = mpp({
    secret: 'e2e-secret-e2e-secret-e2e-secret-0123456789',
    methods: [tempo({ rpcUrl, chainId: 31337, recipient })],
  })
  const sponsored = tempo({ rpcUrl, chainId: 31337, recipient: sponsoredRecipient, feePayer: { account: sponsor, feeToken: alphaUsd } })
  app = new Hono()
  app.get('/report', pay.charge({ amount: '0.01' }), (c) => c.json({ paidBy: c.get('payment').payer, type: c.get('payment').credentialType }))
  app.get('/sponsored', pay.charge({ amount: '0.02', methods: [sponsored] }), (c) => c.json({ ok: true }))
  app.get('/free', pay.charge({ amount: '0' }), (c) => c.json({ who: c.get('payment').payer }))
  app.post('/after', pay.charge({ amount: '0.01', settle: 'after' }), (c) => c.json({ done: true }))
})

/** The mppx client, fetching through the app; remembers the credentials it sent. */
function client(account: LocalAccount, mode?: 'pull' | 'push') {
  const sent: string[] = []
  const mppx = Mppx.create({
    polyfill: false,
    methods: [
      mppxTempo.charge({
        account,
        ...(mode && { mode }),
        getClient: () => createClient({ chain: localChain(rpcUrl), transport: http(rpcUrl) }),
      }),
    ],
    fetch: async (input: RequestInfo | URL, init?: RequestInit) => {
      const request = new Request(input, init)
      const authorization = request.headers.get('authorization')
      if (authorization) sent.push(authorization)
      return app.fetch(request)
    },
  })
  return { fetch: (path: string, init?: RequestInit) => mppx.fetch(`http://api.e2e.test${path}`, init), sent }
}

const replay = (path: string, authorization: string, method = 'GET') =>
  app.fetch(new Request(`http://api.e2e.test${path}`, { method, headers: { authorization } }))

describe('e2e: the mppx client pays through the middleware', () => {
  test.each(['pull', 'push'] as const)('T2 T5 C6 C9: %s — 200, a valid receipt, the recipient paid exactly, replay refused', async (mode) => {
    const { fetch, sent } = client(payer, mode)
    const before = await balanceOf(rpcUrl, recipient)
    const response = await fetch('/report')
    expect(response.status).toBe(200)
    expect(await response.json()).toEqual({ paidBy: payer.address, type: mode === 'pull' ? 'transaction' : 'hash' })
    const receipt = parseReceipt(response.headers.get('payment-receipt') as string)
    expect(receipt).toMatchObject({ status: 'success', method: 'tempo' })
    expect(receipt.reference).toMatch(/^0x[0-9a-f]{64}$/)
    expect(Number.isNaN(Date.parse(receipt.timestamp))).toBe(false)
    expect(response.headers.get('cache-control')).toBe('private')
    expect(await balanceOf(rpcUrl, recipient)).toBe(before + 10_000n)
    const chainReceipt = await createClient({ chain: localChain(rpcUrl), transport: http(rpcUrl) }).request({
      method: 'eth_getTransactionReceipt',
      params: [receipt.reference as `0x${string}`],
    })
    expect((chainReceipt as { status: string }).status).toBe('0x1')

    expect(sent).toHaveLength(1)
    const again = await replay('/report', sent[0] as string)
    expect(again.status).toBe(402)
    expect(again.headers.get('payment-receipt')).toBeNull()
    const problem = (await again.json()) as { detail: string }
    expect(problem.detail).not.toContain(sent[0]?.slice(8, 60))
    expect(await balanceOf(rpcUrl, recipient)).toBe(before + 10_000n)
  })

  test('T3: sponsored pull — the payer pays only the amount, the sponsor pays the fee', async () => {
    const { fetch, sent } = client(payer)
    const before = {
      path: await balanceOf(rpcUrl, payer.address, pathUsd),
      alpha: await balanceOf(rpcUrl, payer.address, alphaUsd),
      sponsor: await balanceOf(rpcUrl, sponsor.address, alphaUsd),
    }
    const response = await fetch('/sponsored')
    expect(response.status).toBe(200)
    expect(parseReceipt(response.headers.get('payment-receipt') as string).method).toBe('tempo')
    expect(await balanceOf(rpcUrl, sponsoredRecipient)).toBe(20_000n)
    expect(await balanceOf(rpcUrl, payer.address, pathUsd)).toBe(before.path - 20_000n)
    expect(await balanceOf(rpcUrl, payer.address, alphaUsd)).toBe(before.alpha)
    expect(await balanceOf(rpcUrl, sponsor.address, alphaUsd)).toBeLessThan(before.sponsor)
    const again = await replay('/sponsored', sent[0] as string)
    expect(again.status).toBe(402)
    expect(await balanceOf(rpcUrl, sponsoredRecipient)).toBe(20_000n)
  })

  test('T6: zero amount — a proof, no transaction; the receipt reference is the challenge id', async () => {
    const someone = privateKeyToAccount(generatePrivateKey())
    const { fetch, sent } = client(someone)
    const response = await fetch('/free')
    expect(response.status).toBe(200)
    expect(await response.json()).toEqual({ who: someone.address })
    const receipt = parseReceipt(response.headers.get('payment-receipt') as string)
    const credential = JSON.parse(Buffer.from((sent[0] as string).slice('Payment '.length), 'base64url').toString()) as {
      challenge: { id: string }
    }
    expect(receipt.reference).toBe(credential.challenge.id)
    const again = await replay('/free', sent[0] as string)
    expect(again.status).toBe(402)
  })

  test('settle after the handler: the challenge offers pull only and the client pays in pull', async () => {
    const unpaid = await app.fetch(new Request('http://api.e2e.test/after', { method: 'POST' }))
    expect(unpaid.status).toBe(402)
    const [challenge] = parseChallenges(unpaid.headers.get('www-authenticate') as string)
    expect((decodeJson(challenge?.request as string) as { methodDetails: unknown }).methodDetails).toEqual({
      chainId: 31337,
      supportedModes: ['pull'],
    })
    const { fetch } = client(payer)
    const before = await balanceOf(rpcUrl, recipient)
    const response = await fetch('/after', { method: 'POST' })
    expect(response.status).toBe(200)
    expect(await balanceOf(rpcUrl, recipient)).toBe(before + 10_000n)
  })

  test('a push client on a settle-after route is told it cannot push', async () => {
    const { fetch } = client(payer, 'push')
    await expect(fetch('/after', { method: 'POST' })).rejects.toThrow(/does not support push/i)
  })
})
