import fc from 'fast-check'
import { Base64 } from 'ox'
import { expect, test } from 'vitest'
import { base64url, fromBase64url } from '../../src/protocol/encoding.js'

test('C2: base64url of text (ASCII fast path and any UTF-8) equals ox, without padding, and decodes back', () => {
  fc.assert(
    fc.property(fc.oneof(fc.string({ unit: 'grapheme', maxLength: 400 }), fc.string({ unit: 'binary-ascii', maxLength: 400 })), (text) => {
      const encoded = base64url(text)
      expect(encoded).toBe(Base64.fromString(text, { url: true, pad: false }))
      expect(encoded).toMatch(/^[A-Za-z0-9_-]*$/)
      expect(fromBase64url(encoded)).toBe(new TextDecoder().decode(new TextEncoder().encode(text)))
    }),
    { numRuns: 2000 },
  )
})

test('C2: base64url of bytes equals ox, also past the chunk size', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 20_000 }), (bytes) => {
      expect(base64url(bytes)).toBe(Base64.fromBytes(bytes, { url: true, pad: false }))
    }),
    { numRuns: 200 },
  )
})
