/**
 * The voucher signature check against a kept public key (S11) decides exactly what recovering
 * the signer and comparing it decides, for every form of signature: right, wrong parity, compact,
 * high-s, another key's, tampered, garbage.
 */
import fc from 'fast-check'
import { Secp256k1, Signature } from 'ox'
import type { Address, Hex } from 'viem'
import { privateKeyToAccount } from 'viem/accounts'
import { describe, expect, test } from 'vitest'
import { domainSeparator, recoverSigner, type SignerCheck, signerKeys, voucherDigest } from '../../src/tempo/session/voucher.js'

const n = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n
const domain = domainSeparator('0x1111111111111111111111111111111111111111', 31337)
const hex32 = (value: bigint) => value.toString(16).padStart(64, '0')

/** What recovery followed by a comparison decides. */
function byRecovery(digest: Hex, signature: string, signer: Address): SignerCheck {
  const recovered = recoverSigner(digest, signature)
  if (recovered === undefined) return 'invalid'
  return recovered.toLowerCase() === signer.toLowerCase() ? 'ok' : 'mismatch'
}

/** Forms of one honest signature and of its corruptions. */
function variants(signature: { r: bigint; s: bigint; yParity: number }, other: Hex): string[] {
  const { r, s, yParity } = signature
  const v = (parity: number) => (27 + parity).toString(16)
  const compact = (parity: number, sValue = s) => `0x${hex32(r)}${hex32((BigInt(parity) << 255n) | sValue)}`
  return [
    `0x${hex32(r)}${hex32(s)}${v(yParity)}`,
    `0x${hex32(r)}${hex32(s)}0${yParity}`,
    compact(yParity),
    // Wrong parity: a valid signature of another key.
    `0x${hex32(r)}${hex32(s)}${v(1 - yParity)}`,
    compact(1 - yParity),
    // High s (the same point, the malleable twin): refused.
    `0x${hex32(r)}${hex32(n - s)}${v(1 - yParity)}`,
    // Tampered r or s.
    `0x${hex32(r ^ 1n)}${hex32(s)}${v(yParity)}`,
    `0x${hex32(r)}${hex32(s ^ 2n)}${v(yParity)}`,
    // Out of range and malformed.
    `0x${hex32(0n)}${hex32(s)}${v(yParity)}`,
    `0x${hex32(n)}${hex32(s)}${v(yParity)}`,
    `0x${hex32(r)}${hex32(s)}1d`,
    `0x${hex32(r)}${hex32(s)}`.slice(0, 100),
    other,
  ]
}

describe('voucher signature against a kept key', () => {
  test("S11: a known signer's vouchers are decided exactly as recovery decides them, warm or cold, for every form and corruption", () => {
    const keys = [Secp256k1.randomPrivateKey(), Secp256k1.randomPrivateKey()]
    const accounts = keys.map((key) => privateKeyToAccount(key))
    const warm = signerKeys()
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: (1n << 128n) - 1n }), fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.nat(1), (amount, channel, who) => {
        const channelId = `0x${Buffer.from(channel).toString('hex')}` as Hex
        const digest = voucherDigest(domain, channelId, amount)
        const signature = Secp256k1.sign({ payload: digest, privateKey: keys[who]! })
        const other = Signature.toHex(Secp256k1.sign({ payload: digest, privateKey: keys[1 - who]! }))
        for (const candidate of variants(signature, other)) {
          for (const account of accounts) {
            const expected = byRecovery(digest, candidate, account.address)
            expect([candidate, account.address, warm.check(digest, candidate, account.address)]).toEqual([candidate, account.address, expected])
            expect(signerKeys().check(digest, candidate, account.address)).toBe(expected)
          }
        }
      }),
      { numRuns: 25 },
    )
    // Both signers' keys were kept from their first good voucher.
    expect(warm.size).toBe(2)
  })

  test('S11: a key enters only from a voucher that recovered to its signer, and the oldest key leaves past the capacity', () => {
    const keys = signerKeys(2)
    const digest = voucherDigest(domain, `0x${'ab'.repeat(32)}`, 5n)
    const [a, b, c] = [0, 1, 2].map(() => Secp256k1.randomPrivateKey())
    const sign = (key: Hex) => Signature.toHex(Secp256k1.sign({ payload: digest, privateKey: key }))
    const address = (key: Hex) => privateKeyToAccount(key).address
    expect(keys.check(digest, sign(b!), address(a!))).toBe('mismatch')
    expect(keys.check(digest, `0x${'00'.repeat(65)}`, address(a!))).toBe('invalid')
    expect(keys.size).toBe(0)
    for (const key of [a!, b!, c!]) expect(keys.check(digest, sign(key), address(key))).toBe('ok')
    expect(keys.size).toBe(2)
    // The evicted signer is still checked correctly (by recovery), and comes back.
    expect(keys.check(digest, sign(a!), address(a!))).toBe('ok')
    expect(keys.check(digest, sign(c!), address(a!))).toBe('mismatch')
  })
})
