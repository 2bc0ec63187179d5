/**
 * Draining the fee sponsor (T3). A sponsored route pays the fee of every transaction it
 * broadcasts, reverted or not, and its simulation runs against the state before any of them
 * lands: several payments from one sender, sent at once, each simulate fine against the same
 * balance. So the sponsor sends one payment per sender at a time (checked and reserved before
 * any await), and stops sponsoring a sender whose transactions keep failing on chain.
 */
import { custom, type Hex, keccak256 } from 'viem'
import type { LocalAccount } from 'viem/accounts'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { alphaUsd, balanceOf, fund, fundedAccount, pathUsd } from '../../scripts/local-chain.js'
import { type RpcProxy, startRpcProxy } from '../../scripts/rpc-proxy.js'
import { feeInBaseUnits } from '../../src/tempo/fee-payer.js'
import type { FeePayerConfig, TempoConfig } from '../../src/tempo/index.js'
import { credentialFor } from '../helpers/http.js'
import { craft, rawRpc, transferCall } from '../tempo/helpers.js'
import { broadcast, expectDelivered, expectRefusal, fresh, problemBase, rpcUrl, type Shop, shop, sponsorFeeBalance, withCredential } from './support.js'

const funder = 7
let proxy: RpcProxy
let sponsor: Awaited<ReturnType<typeof fundedAccount>>

beforeAll(async () => {
  proxy = await startRpcProxy(rpcUrl())
  sponsor = await fundedAccount(rpcUrl(), { funder, amount: '20', tokens: [alphaUsd] })
})
afterAll(() => proxy.close())

const sponsorBalance = sponsorFeeBalance(() => sponsor, alphaUsd)
// What `craft` declares: 800 000 gas at 40 gwei-equivalent, at most 32 000 base units of fee.
const worstFee = feeInBaseUnits(800_000n, 40_000_000_000n)

/**
 * The chain, through the counting proxy, as the shop's transport: records every broadcast, the
 * most that were under way at once, and can run `beforeBroadcast` once, just before the next one.
 */
function watchedTransport() {
  const state = { sending: 0, most: 0, broadcast: [] as Hex[], beforeBroadcast: undefined as (() => Promise<void>) | undefined }
  const transport = custom({
    async request({ method, params }: { method: string; params: unknown[] }) {
      if (method !== 'eth_sendRawTransactionSync') return rawRpc(proxy.url, method, params ?? [])
      const run = state.beforeBroadcast
      state.beforeBroadcast = undefined
      if (run) await run()
      state.broadcast.push(keccak256(params[0] as Hex))
      state.most = Math.max(state.most, ++state.sending)
      try {
        return await rawRpc(proxy.url, method, params ?? [])
      } finally {
        state.sending--
      }
    },
  })
  return { transport, state }
}

/** The sponsor's account, counting its co-signatures. */
function countingSponsor(): { account: LocalAccount; cosigned: () => number } {
  let count = 0
  const account: LocalAccount = {
    ...sponsor,
    sign: async (parameters: { hash: Hex }) => {
      count++
      return sponsor.sign!(parameters)
    },
  }
  return { account, cosigned: () => count }
}

function sponsoredShop(
  transport: ReturnType<typeof watchedTransport>['transport'],
  feePayer: Partial<FeePayerConfig> = {},
  tempo: Partial<TempoConfig> = {},
): Shop {
  return shop({
    tempo: { rpcUrl: undefined, transport, feePayer: { account: sponsor, feeToken: alphaUsd, ...feePayer }, ...tempo },
  })
}

/** A sponsored payment of `payer` for a fresh challenge of `s`: a distinct transaction (expiring nonce) each time. */
async function sponsoredPayment(s: Shop, payer: { privateKey: Hex }) {
  const { challenge } = await s.challenge()
  const raw = craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)], sponsor: 'envelope78' })
  const credential = credentialFor(challenge, { type: 'transaction', signature: raw })
  return { raw, credential, send: () => s.fetch('/paid', withCredential(credential)) }
}

async function read(response: Response) {
  return {
    status: response.status,
    retryAfter: response.headers.get('retry-after'),
    receipt: response.headers.get('payment-receipt'),
    body: await response.text(),
  }
}

/** What the chain charged for the given transactions' fees, in fee-token base units. */
async function feesOf(hashes: Hex[]): Promise<bigint> {
  let total = 0n
  for (const hash of hashes) {
    const receipt = (await rawRpc(rpcUrl(), 'eth_getTransactionReceipt', [hash])) as { gasUsed: Hex; effectiveGasPrice: Hex } | null
    if (receipt) total += feeInBaseUnits(BigInt(receipt.gasUsed), BigInt(receipt.effectiveGasPrice))
  }
  return total
}

describe('T3: one sender, many sponsored payments at once', () => {
  test('T3 C9: a payer funded for one payment sends six sponsored payments at once (six challenges, six distinct transactions) → one is co-signed, broadcast and delivered; the sponsor pays exactly its one fee', async () => {
    const { transport, state } = watchedTransport()
    const { account, cosigned } = countingSponsor()
    const s = sponsoredShop(transport, { account })
    const payer = await fundedAccount(rpcUrl(), { funder, amount: '0.01', tokens: [pathUsd] })
    const attempts = await Promise.all(Array.from({ length: 6 }, () => sponsoredPayment(s, payer)))
    expect(new Set(attempts.map((attempt) => keccak256(attempt.raw))).size).toBe(6)
    const sponsorBefore = await balanceOf(rpcUrl(), sponsor.address, alphaUsd)
    proxy.reset()

    const answers = await Promise.all(attempts.map(async (attempt) => read(await attempt.send())))

    expect(answers.filter((answer) => answer.status === 200)).toHaveLength(1)
    for (const answer of answers.filter((a) => a.status !== 200)) {
      expect(answer.receipt).toBeNull()
      const problem = JSON.parse(answer.body) as { type: string; detail: string }
      if (answer.status === 409) {
        // Refused while the first was in flight: retry this credential once it has settled.
        expect(problem.type).toBe(`${problemBase}payment-in-progress`)
        expect(problem.detail).toMatch(
          /another sponsored payment from 0x[0-9a-fA-F]{40} is awaiting settlement; the fee sponsor sends one payment per payer at a time/,
        )
        expect(answer.retryAfter).toBe('1')
      } else {
        // Or, reaching the sponsor after the first had settled: the payer has nothing left.
        expect(answer.status).toBe(402)
        expect(problem.detail).toMatch(/the transaction would fail, so the fee sponsor will not send it/)
      }
      for (const attempt of attempts) expect(answer.body).not.toContain(attempt.credential.slice('Payment '.length))
    }
    expect(cosigned()).toBe(1)
    expect(state.broadcast).toHaveLength(1)
    expect(proxy.counts.get('eth_sendRawTransactionSync')).toBe(1)
    expect(s.runs()).toBe(1)
    expect(await balanceOf(rpcUrl(), s.recipient)).toBe(10_000n)
    expect(await balanceOf(rpcUrl(), payer.address)).toBe(0n)
    const paid = sponsorBefore - (await balanceOf(rpcUrl(), sponsor.address, alphaUsd))
    expect(paid).toBeGreaterThan(0n)
    expect(paid).toBe(await feesOf(state.broadcast))
    expect(paid).toBeLessThanOrEqual(worstFee)
  })

  test('T3: an honest payer sending three sponsored payments at once gets each one delivered, one broadcast at a time; a refused credential is paid by its retry', async () => {
    const { transport, state } = watchedTransport()
    const s = sponsoredShop(transport)
    const payer = await fundedAccount(rpcUrl(), { funder, amount: '0.03', tokens: [pathUsd] })
    const attempts = await Promise.all(Array.from({ length: 3 }, () => sponsoredPayment(s, payer)))
    const answers = await Promise.all(attempts.map(async (attempt) => read(await attempt.send())))
    for (const answer of answers) expect([200, 409]).toContain(answer.status)
    for (const [i, answer] of answers.entries()) if (answer.status === 409) await expectDelivered(await attempts[i]!.send())
    expect(state.most).toBe(1)
    expect(state.broadcast).toHaveLength(3)
    expect(s.runs()).toBe(3)
    expect(await balanceOf(rpcUrl(), s.recipient)).toBe(30_000n)
  })
})

describe("T3: the sponsor's loss to one payer's failed transactions is bounded per window", () => {
  test('T3 T4: a payer whose sponsored transaction reverted (it emptied its account before the broadcast) is refused sponsorship until the window has passed, before any RPC call; other payers are served meanwhile', async () => {
    const { transport, state } = watchedTransport()
    // The method's clock runs 61 s behind until step 4, where it catches up: the window (60 s)
    // has then passed since the failure, while every transaction stays valid on chain.
    let offset = -61_000
    const s = sponsoredShop(
      transport,
      // The bound is one worst-case fee: a single failure uses the window up.
      { maxTotalFee: worstFee, maxRevertedFeesPerSender: worstFee, revertWindowMs: 60_000 },
      { now: () => Date.now() + offset },
    )
    const racer = await fundedAccount(rpcUrl(), { funder, amount: '1' })

    // 1. The race: the payer's own transfer empties its account just before the broadcast.
    state.beforeBroadcast = async () => {
      const all = await balanceOf(rpcUrl(), racer.address)
      expect((await broadcast(craft(racer.privateKey, { calls: [transferCall(pathUsd, fresh(), all)], feeToken: alphaUsd }))).status).toBe('success')
    }
    const sponsorBefore = await balanceOf(rpcUrl(), sponsor.address, alphaUsd)
    const first = await sponsoredPayment(s, racer)
    await expectRefusal(
      s,
      first.send,
      { status: 402, kind: 'settlement-failed', detail: /the transaction reverted on chain/ },
      { credentials: [first.credential] },
    )
    expect(state.beforeBroadcast).toBeUndefined()
    const lost = sponsorBefore - (await balanceOf(rpcUrl(), sponsor.address, alphaUsd))
    expect(lost).toBeGreaterThan(0n)
    expect(lost).toBeLessThanOrEqual(worstFee)

    // 2. Funded again, it tries again (and again): refused, nothing simulated, nothing lost.
    await fund(rpcUrl(), racer.address, { funder, amount: '1', tokens: [pathUsd] })
    for (let i = 0; i < 2; i++) {
      const again = await sponsoredPayment(s, racer)
      let retryAfter: string | null = null
      proxy.reset()
      await expectRefusal(
        s,
        async () => {
          const response = await again.send()
          retryAfter = response.headers.get('retry-after')
          return response
        },
        {
          status: 402,
          kind: 'verification-failed',
          detail: new RegExp(
            `the fee sponsor already paid ${lost} fee-token base units for this payer's failed transactions in the last 60 s and sponsors at most ${worstFee} per payer in that time; retry in \\d+ s, or pay your own fee`,
          ),
        },
        { watch: [{ address: racer.address }, sponsorBalance], credentials: [again.credential] },
      )
      expect(Number(retryAfter)).toBeGreaterThan(0)
      expect(Number(retryAfter)).toBeLessThanOrEqual(60)
      expect(proxy.total()).toBe(0)
    }

    // 3. The bound is per payer: another payer is sponsored meanwhile.
    const honest = await fundedAccount(rpcUrl(), { funder, amount: '1', tokens: [pathUsd] })
    await expectDelivered(await (await sponsoredPayment(s, honest)).send())

    // 4. Once the window has passed, the racer is sponsored again.
    offset = 0
    await expectDelivered(await (await sponsoredPayment(s, racer)).send())
    expect(await balanceOf(rpcUrl(), s.recipient)).toBe(20_000n)
  })
})
