import fc from 'fast-check'
import { Hash } from 'ox'
import { describe, expect, test } from 'vitest'
import { hmacAbsorb, hmacFinish, hmacKey, hmacSha256, sha256 } from '../../src/protocol/hmac.js'

const utf8 = (value: string) => new TextEncoder().encode(value)
const hex = (bytes: Uint8Array) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')
const reference = (key: Uint8Array, message: string) => hex(Hash.hmac256(key, utf8(message), { as: 'Bytes' }))

describe('HMAC-SHA256 with an imported key (challenge binding, C3)', () => {
  test('C3: RFC 4231 test cases 1 and 2', () => {
    expect(hex(hmacSha256(hmacKey(new Uint8Array(20).fill(0x0b)), 'Hi There'))).toBe('b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7')
    expect(hex(hmacSha256(hmacKey(utf8('Jefe')), 'what do ya want for nothing?'))).toBe('5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843')
  })

  test('C3: a key longer than a block is hashed first (RFC 4231 test case 6)', () => {
    expect(hex(hmacSha256(hmacKey(new Uint8Array(131).fill(0xaa)), 'Test Using Larger Than Block-Size Key - Hash Key First'))).toBe(
      '60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54',
    )
  })

  test('C3: equals ox HMAC for any key, any UTF-8 input and any split into absorbed prefix and rest', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 1, maxLength: 200 }),
        fc.string({ unit: 'grapheme', maxLength: 300 }),
        fc.string({ unit: 'grapheme', maxLength: 300 }),
        fc.string({ unit: 'grapheme', maxLength: 80 }),
        (key, first, second, rest) => {
          const imported = hmacKey(key)
          const expected = reference(key, first + second + rest)
          expect(hex(hmacSha256(imported, first + second + rest))).toBe(expected)
          expect(hex(hmacFinish(hmacAbsorb(hmacAbsorb(imported, first), second), rest))).toBe(expected)
        },
      ),
      { numRuns: 400 },
    )
  })

  test('C3: lengths around block boundaries (55, 56, 63, 64, 65 … bytes)', () => {
    const key = utf8('k'.repeat(32))
    for (let prefix = 0; prefix < 130; prefix += 7)
      for (let rest = 0; rest < 140; rest++) {
        const a = 'p'.repeat(prefix)
        const b = 'r'.repeat(rest)
        expect(hex(hmacFinish(hmacAbsorb(hmacKey(key), a), b))).toBe(reference(key, a + b))
      }
  })

  test('C3: a state can be finished many times and keeps giving the same answer', () => {
    const key = hmacKey(utf8('s'.repeat(40)))
    const prefix = hmacAbsorb(key, 'api.example|tempo|charge|eyJhbW91bnQiOiIxMDAwMCJ9|')
    const first = hex(hmacFinish(prefix, '2026-01-01T00:00:00Z||b3BhcXVl'))
    hmacFinish(prefix, 'x'.repeat(5000))
    expect(hex(hmacFinish(prefix, '2026-01-01T00:00:00Z||b3BhcXVl'))).toBe(first)
  })
})

describe('SHA-256 (credential fingerprints)', () => {
  test('C10: equals ox SHA-256 for inputs of every length around the block and padding boundaries', () => {
    for (let length = 0; length <= 200; length++) {
      const bytes = Uint8Array.from({ length }, (_, i) => (i * 31 + length) & 0xff)
      expect({ length, digest: hex(sha256(bytes)) }).toEqual({ length, digest: hex(Hash.sha256(bytes, { as: 'Bytes' })) })
    }
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2_000 }), (bytes) => {
        expect(hex(sha256(bytes))).toBe(hex(Hash.sha256(bytes, { as: 'Bytes' })))
      }),
      { numRuns: 200 },
    )
  })
})
