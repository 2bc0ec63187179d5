/**
 * accounts() misconfiguration fails at construction (or at the call that needs what is missing)
 * with a ConfigurationError saying what to fix.
 */
import { describe, expect, test } from 'vitest'
import { accounts } from '../../src/accounts/index.js'
import type { Meter } from '../../src/accounts/meter.js'
import { ConfigurationError } from '../../src/protocol/errors.js'
import { tempo } from '../../src/tempo/index.js'

const secret = 'accounts-config-secret-0123456789abcdefghij'
const realm = 'api.config.test'
const methods = [tempo({ rpcUrl: 'http://127.0.0.1:9', chainId: 31337, recipient: '0x000000000000000000000000000000000000dEaD' })]
const never = () => Promise.reject(new Error('not called'))
const meter: Meter = { hold: never, capture: never, release: never, extend: never }
const base = { meter, realm, secret, methods }

function refusal(build: () => unknown): string {
  try {
    build()
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigurationError)
    return (error as Error).message
  }
  throw new Error('no ConfigurationError')
}

describe('accounts() configuration', () => {
  test('a meter or ledger is required, and one lacking a method is named', () => {
    expect(refusal(() => accounts(undefined as never))).toMatch(/pass an options object/)
    expect(refusal(() => accounts({ realm, secret, methods } as never))).toMatch(/pass `ledger` .* or a `meter` with hold, capture, release and extend/)
    const { extend: _, ...noExtend } = meter
    expect(refusal(() => accounts({ ...base, meter: noExtend as Meter }))).toMatch(
      /the `meter` has no extend\(\); a meter needs hold, capture, release and extend/,
    )
    const { capture: __, ...noCapture } = meter
    expect(refusal(() => accounts({ ...base, meter: { ...noCapture, release: 1 } as unknown as Meter }))).toMatch(/the `meter` has no capture\(\), release\(\)/)
    expect(refusal(() => accounts({ ...base, ledger: { ...meter } as never }))).toMatch(/either `ledger` or `meter`, not both/)
  })

  test('realm, durations, the top-up URL and the key header are checked', () => {
    expect(refusal(() => accounts({ ...base, realm: ' ' }))).toMatch(/`realm` is required/)
    expect(refusal(() => accounts({ ...base, holdTtlMs: 10 }))).toMatch(/holdTtlMs/)
    expect(refusal(() => accounts({ ...base, timeoutMs: -1 }))).toMatch(/timeoutMs/)
    // Past the longest timer delay, the hold's keep-alive interval would fire in a busy loop.
    expect(refusal(() => accounts({ ...base, holdTtlMs: 10_000_000_000 }))).toMatch(/`holdTtlMs` must be a number of milliseconds from 1000 to 2147483647/)
    expect(refusal(() => accounts({ ...base, timeoutMs: 3_000_000_000 }))).toMatch(/`timeoutMs` must be a number of milliseconds from 10 to 2147483647/)
    expect(refusal(() => accounts({ ...base, topUpUrl: '' }))).toMatch(/`topUpUrl` must be a path or URL/)
    for (const keyHeader of ['Authorization', 'payment-receipt', 'X API Key', '', 'X-Key:'])
      expect(refusal(() => accounts({ ...base, keyHeader }))).toMatch(/`keyHeader` must be an HTTP header name other than Authorization/)
    expect(() => accounts({ ...base, keyHeader: 'X-Service-Key' })).not.toThrow()
  })

  test('what needs the ledger says so when only a meter was given', () => {
    const acct = accounts(base)
    expect(refusal(() => acct.routes())).toMatch(/routes\(\) needs `ledger`/)
    expect(refusal(() => acct.hub())).toMatch(/hub\(\) needs `ledger`/)
    expect(refusal(() => acct.payout())).toMatch(/payout\(\) needs `payouts: \{ wallet, payoutAddress \}`/)
    expect(refusal(() => accounts({ ...base, payouts: {} as never }))).toMatch(/`payouts` needs `ledger`/)
  })
})
