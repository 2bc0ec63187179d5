/**
 * Binding: a credential answers exactly the challenge this server issued, for this route, query,
 * realm, body and time. Every variant below carries a payment that would otherwise be accepted
 * (shown by paying with the untouched credential afterwards).
 */
import type { Address, Hex } from 'viem'
import { beforeAll, describe, expect, test } from 'vitest'
import { alphaUsd, balanceOf, fundedAccount, pathUsd } from '../../scripts/local-chain.js'
import type { Challenge } from '../../src/index.js'
import { credentialFor } from '../helpers/http.js'
import { craft, transferCall } from '../tempo/helpers.js'
import {
  authorizationOf,
  encodeRequest,
  expectDelivered,
  expectRefusal,
  fresh,
  mint,
  mppxPays,
  realm,
  requestJson,
  rpcUrl,
  type Shop,
  shop,
  type Wire,
  wireOf,
  withCredential,
} from './support.js'

let payer: Awaited<ReturnType<typeof fundedAccount>>
let splitter: Address

beforeAll(async () => {
  payer = await fundedAccount(rpcUrl(), { funder: 2, amount: '20' })
  // A split recipient that already holds the token (a first-time recipient costs more gas).
  splitter = (await fundedAccount(rpcUrl(), { funder: 2, amount: '1', tokens: [pathUsd] })).address
})

const memo = `0x${'5a'.repeat(32)}` as Hex
const attacker = fresh()

/** A shop whose request has every field worth tampering with: splits, memo, one mode. */
function richShop(): Shop {
  return shop({ tempo: { splits: [{ amount: '0.002', recipient: splitter }], memo, modes: ['pull'] } })
}

/** A transaction that pays the rich shop exactly (8000 + memo to the recipient, 2000 to the split). */
function exactPayment(s: Shop): Hex {
  return craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 8_000n, memo), transferCall(pathUsd, splitter, 2_000n)] })
}

function tamper(authorization: string, change: (wire: Wire) => void): string {
  const wire = wireOf(authorization)
  change(wire)
  return authorizationOf(wire)
}

function tamperRequest(authorization: string, change: (request: ReturnType<typeof requestJson>) => void): string {
  return tamper(authorization, (wire) => {
    const request = requestJson(wire.challenge.request)
    change(request)
    wire.challenge.request = encodeRequest(request)
  })
}

const altered = { status: 402, kind: 'invalid-challenge', detail: /the challenge id does not match its parameters/ } as const

describe('C3 I2: a tampered echoed request is refused; the untouched credential still pays', () => {
  const mutations: [string, (request: ReturnType<typeof requestJson>) => void][] = [
    ['a lower amount', (r) => (r.amount = '1')],
    ['another recipient', (r) => (r.recipient = attacker)],
    ['another currency', (r) => (r.currency = alphaUsd)],
    ['another chain id', (r) => (r.methodDetails.chainId = 42431)],
    ['no splits', (r) => delete r.methodDetails.splits],
    ['a smaller split', (r) => ((r.methodDetails.splits as { amount: string }[])[0]!.amount = '1')],
    ['a split to someone else', (r) => ((r.methodDetails.splits as { recipient: string }[])[0]!.recipient = attacker)],
    ['another memo', (r) => (r.methodDetails.memo = `0x${'00'.repeat(32)}`)],
    ['no memo', (r) => delete r.methodDetails.memo],
    ['fee sponsorship asked for', (r) => (r.methodDetails.feePayer = true)],
    ['push mode added', (r) => (r.methodDetails.supportedModes = ['pull', 'push'])],
    ['an extra field', (r) => (r.externalId = 'free')],
  ]

  test.each(mutations)('C3 I2: %s', async (_name, change) => {
    const s = richShop()
    const { challenge } = await s.challenge()
    const genuine = credentialFor(challenge, { type: 'transaction', signature: exactPayment(s) })
    const forged = tamperRequest(genuine, change)
    await expectRefusal(s, () => s.fetch('/paid', withCredential(forged)), altered, {
      watch: [{ address: payer.address }, { address: splitter }],
      credentials: [forged],
    })
    await expectDelivered(await s.fetch('/paid', withCredential(genuine)))
    expect(await balanceOf(rpcUrl(), s.recipient)).toBe(8_000n)
  })
})

describe('C3: the other challenge parameters are bound too', () => {
  const cases: [string, (wire: Wire) => void, RegExp?][] = [
    ['a later expires', (w) => (w.challenge.expires = new Date(Date.now() + 3_600_000).toISOString())],
    ['another realm', (w) => (w.challenge.realm = 'evil.test')],
    ['another intent', (w) => (w.challenge.intent = 'session')],
    ['an opaque naming another route', (w) => (w.challenge.opaque = Buffer.from(JSON.stringify({ n: 'x', r: 'GET /other' })).toString('base64url'))],
    ['a digest added', (w) => (w.challenge.digest = 'sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:')],
    ['a forged id', (w) => (w.challenge.id = Buffer.from('forged-challenge-id-0123456789abcdef').toString('base64url'))],
    ['the id of another challenge', () => undefined],
  ]

  test.each(cases)('C3: %s', async (name, change) => {
    const s = shop()
    const { challenge } = await s.challenge()
    const genuine = credentialFor(challenge, {
      type: 'transaction',
      signature: craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)] }),
    })
    let forged = tamper(genuine, change)
    if (name === 'the id of another challenge') {
      const other = await s.challenge()
      forged = tamper(genuine, (w) => (w.challenge.id = other.challenge.id))
    }
    await expectRefusal(s, () => s.fetch('/paid', withCredential(forged)), altered, { watch: [{ address: payer.address }], credentials: [forged] })
    await expectDelivered(await s.fetch('/paid', withCredential(genuine)))
  })

  test('C3: a challenge issued by a server holding another secret is refused', async () => {
    const s = shop()
    const twin = shop({ recipient: s.recipient, secret: 'another-servers-secret-0123456789abcdef-012345' })
    const { challenge } = await twin.challenge()
    const credential = credentialFor(challenge, {
      type: 'transaction',
      signature: craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)] }),
    })
    await expectRefusal(
      s,
      () => s.fetch('/paid', withCredential(credential)),
      {
        status: 402,
        kind: 'invalid-challenge',
        detail: /issued under a secret this server does not hold/,
      },
      { watch: [{ address: payer.address }], credentials: [credential] },
    )
  })

  test('C5: a credential naming another payment method → 400 method-unsupported', async () => {
    const s = shop()
    const genuine = await mppxPays(s, payer, 'pull')
    const forged = tamper(genuine, (w) => (w.challenge.method = 'stripe'))
    await expectRefusal(
      s,
      () => s.fetch('/paid', withCredential(forged)),
      {
        status: 400,
        kind: 'method-unsupported',
        detail: /method "stripe" is not accepted for this route; accepted: tempo/,
      },
      { watch: [{ address: payer.address }], credentials: [forged] },
    )
  })
})

describe('I2: a credential is good for the request it was issued for, nothing else', () => {
  test('I2: a challenge for another route', async () => {
    const s = shop()
    const credential = await mppxPays(s, payer, 'pull', '/other')
    await expectRefusal(
      s,
      () => s.fetch('/paid', withCredential(credential)),
      {
        status: 402,
        kind: 'invalid-challenge',
        detail: /the challenge was issued for GET \/other, not for GET \/paid/,
      },
      { watch: [{ address: payer.address }], credentials: [credential] },
    )
  })

  test('I2: a challenge for a cheaper route, presented to a dearer one', async () => {
    const s = shop({ cheap: '0.001' })
    const credential = await mppxPays(s, payer, 'pull', '/cheap')
    await expectRefusal(
      s,
      () => s.fetch('/paid', withCredential(credential)),
      {
        status: 402,
        kind: 'invalid-challenge',
        detail: /issued for GET \/cheap, not for GET \/paid/,
      },
      { watch: [{ address: payer.address }], credentials: [credential] },
    )
  })

  test('I2: a challenge for another query string', async () => {
    const s = shop()
    const credential = await mppxPays(s, payer, 'pull', '/paid?item=1')
    await expectRefusal(
      s,
      () => s.fetch('/paid?item=2', withCredential(credential)),
      {
        status: 402,
        kind: 'invalid-challenge',
        detail: /issued for GET \/paid\?item=1, not for GET \/paid\?item=2/,
      },
      { watch: [{ address: payer.address }], credentials: [credential] },
    )
    await expectRefusal(
      s,
      () => s.fetch('/paid', withCredential(credential)),
      {
        status: 402,
        kind: 'invalid-challenge',
        detail: /issued for GET \/paid\?item=1, not for GET \/paid$/,
      },
      { credentials: [credential] },
    )
  })

  test('I2: a challenge for another HTTP method on the same path', async () => {
    const s = shop()
    const init = { method: 'POST', body: 'same body' }
    const credential = await mppxPays(s, payer, 'pull', '/work', init)
    await expectRefusal(
      s,
      () => s.fetch('/work', withCredential(credential, { ...init, method: 'PUT' })),
      {
        status: 402,
        kind: 'invalid-challenge',
        detail: /issued for POST \/work, not for PUT \/work/,
      },
      { watch: [{ address: payer.address }], credentials: [credential] },
    )
  })

  test('I2: a challenge for another realm (Host)', async () => {
    const s = shop()
    const credential = await mppxPays(s, payer, 'pull', '/paid', { headers: { host: 'tenant-a.shop.test' } })
    expect(wireOf(credential).challenge.realm).toBe('tenant-a.shop.test')
    await expectRefusal(
      s,
      () => s.fetch('/paid', withCredential(credential, { headers: { host: 'tenant-b.shop.test' } })),
      {
        status: 402,
        kind: 'invalid-challenge',
        detail: /issued for another realm/,
      },
      { watch: [{ address: payer.address }], credentials: [credential] },
    )
  })

  test('C7: a changed body under the challenge digest', async () => {
    const s = shop()
    const init = { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ item: 'cheap' }) }
    const credential = await mppxPays(s, payer, 'pull', '/work', init)
    expect(wireOf(credential).challenge.digest).toMatch(/^sha-256=:/)
    await expectRefusal(
      s,
      () => s.fetch('/work', withCredential(credential, { ...init, body: JSON.stringify({ item: 'dear' }) })),
      {
        status: 402,
        kind: 'verification-failed',
        detail: /the request body differs from the one the challenge was issued for \(content digest mismatch\)/,
      },
      { watch: [{ address: payer.address }], credentials: [credential] },
    )
    await expectRefusal(
      s,
      () => s.fetch('/work', withCredential(credential, { method: 'POST' })),
      {
        status: 402,
        kind: 'verification-failed',
        detail: /issued for a request with a body, and this one has none/,
      },
      { credentials: [credential] },
    )
    await expectDelivered(await s.fetch('/work', withCredential(credential, init)))
  })
})

describe('C5 I2: time', () => {
  test('C5 I2: an expired challenge → payment-expired, even with a payment that is still valid', async () => {
    const s = shop({ expires: 5 })
    const credential = await mppxPays(s, payer, 'pull')
    const expires = Date.parse(wireOf(credential).challenge.expires!)
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, expires - Date.now() + 1_100)))
    await expectRefusal(
      s,
      () => s.fetch('/paid', withCredential(credential)),
      {
        status: 402,
        kind: 'payment-expired',
        detail: /the challenge expired at .*; request a new one/,
      },
      { watch: [{ address: payer.address }], credentials: [credential] },
    )
  }, 20_000)

  test('C5: a challenge stripped of its expires is refused as altered', async () => {
    const s = shop()
    const genuine = await mppxPays(s, payer, 'pull')
    const forged = tamper(genuine, (w) => delete w.challenge.expires)
    await expectRefusal(s, () => s.fetch('/paid', withCredential(forged)), altered, { watch: [{ address: payer.address }], credentials: [forged] })
  })

  test('C5: even a correctly bound challenge with no expires (minted with the secret) is refused', async () => {
    const s = shop()
    const { challenge } = await s.challenge()
    const { expires: _, id: __, ...rest } = challenge
    const eternal: Challenge = mint(rest)
    const credential = credentialFor(eternal, {
      type: 'transaction',
      signature: craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)] }),
    })
    await expectRefusal(
      s,
      () => s.fetch('/paid', withCredential(credential)),
      {
        status: 402,
        kind: 'invalid-challenge',
        detail: /the challenge has no expires; this server only accepts challenges that expire/,
      },
      { watch: [{ address: payer.address }], credentials: [credential] },
    )
  })

  test('C5 I2: a correctly bound challenge that expired a second ago (minted with the secret) is refused', async () => {
    const s = shop()
    const { challenge } = await s.challenge()
    const { id: _, ...rest } = challenge
    const stale = mint({ ...rest, expires: new Date(Date.now() - 1_000).toISOString() })
    expect(stale.realm).toBe(realm)
    const credential = credentialFor(stale, {
      type: 'transaction',
      signature: craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)] }),
    })
    await expectRefusal(
      s,
      () => s.fetch('/paid', withCredential(credential)),
      {
        status: 402,
        kind: 'payment-expired',
        detail: /expired at/,
      },
      { watch: [{ address: payer.address }], credentials: [credential] },
    )
  })
})
