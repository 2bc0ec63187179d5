/**
 * Reading signed Tempo transactions without recovering the sender (T2): the common payment shape
 * is read straight from the hex, and must agree with ox on every field, on the sign payload and on
 * the encoding being canonical; every other encoding must be left to ox. Chain-free.
 */
import fc from 'fast-check'
import { Hex as OxHex, Rlp, Secp256k1 } from 'ox'
import { SignatureEnvelope, TxEnvelopeTempo } from 'ox/tempo'
import { type Hex, keccak256 } from 'viem'
import { describe, expect, test } from 'vitest'
import { decodeEnvelope, readPlainPayment } from '../../src/tempo/envelope.js'

const privateKey = '0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d'
const hexOf = (min: number, max: number) => fc.uint8Array({ minLength: min, maxLength: max }).map((b) => `0x${Buffer.from(b).toString('hex')}` as Hex)
const uint = (max: bigint) => fc.bigInt({ min: 0n, max })

const envelope = fc
  .record(
    {
      chainId: fc.constantFrom(31337, 4217, 42431, 1),
      fees: fc.tuple(uint(10n ** 12n), uint(10n ** 12n)),
      gas: uint(10n ** 7n),
      nonceKey: uint(2n ** 256n - 1n),
      nonce: uint(2n ** 64n - 1n),
      window: fc.tuple(fc.option(fc.integer({ min: 1, max: 2 ** 40 }), { nil: undefined }), fc.integer({ min: 1, max: 2 ** 20 })),
      feeToken: hexOf(20, 20),
      calls: fc.array(fc.record({ to: hexOf(20, 20), value: uint(2n ** 128n), data: hexOf(0, 120) }, { requiredKeys: ['to'] }), { minLength: 1, maxLength: 3 }),
    },
    { requiredKeys: ['chainId', 'calls'] },
  )
  .map(({ window, fees, ...fields }) => {
    // validBefore after validAfter, either or both absent.
    const [after, length] = window ?? [undefined, 0]
    // The tip never above the fee cap (ox refuses that, and so does the reader).
    const fee = fees && { maxPriorityFeePerGas: fees[0], maxFeePerGas: fees[0] + fees[1] }
    return { ...fields, ...fee, ...(after !== undefined && { validAfter: after }), ...(window && { validBefore: (after ?? 1) + length }) }
  })

function sign(fields: Record<string, unknown>): Hex {
  const tx = TxEnvelopeTempo.from(fields as never)
  const signature = SignatureEnvelope.from(Secp256k1.sign({ payload: TxEnvelopeTempo.getSignPayload(tx), privateKey }))
  return TxEnvelopeTempo.serialize(tx, { signature }).toLowerCase() as Hex
}

/** What ox reads, without the sender it recovers. */
function oxRead(raw: Hex) {
  const { from: _from, ...tx } = TxEnvelopeTempo.deserialize(raw as TxEnvelopeTempo.Serialized)
  return tx
}

describe('T2 reading the common payment shape', () => {
  test('T2: every field, the sign payload and the encoding agree with ox, for any plain payment', () => {
    fc.assert(
      fc.property(envelope, (fields) => {
        const raw = sign(fields)
        const read = readPlainPayment(raw)
        expect(read).toBeDefined()
        const ox = oxRead(raw)
        expect(read!.tx).toEqual(ox)
        expect(keccak256(read!.unsigned)).toBe(TxEnvelopeTempo.getSignPayload(ox))
        // Read this way, the received bytes are taken as the canonical encoding: ox agrees.
        expect(TxEnvelopeTempo.serialize(ox).toLowerCase()).toBe(raw)
      }),
      { numRuns: 150 },
    )
  })
})

/** RLP with a choice of non-canonical forms, to build encodings ox would never produce. */
type Item = string | Item[]
function encode(item: Item, bend?: (item: Item) => 'long' | 'prefixed' | undefined): string {
  const form = bend?.(item)
  const header = (base: number, length: number) => {
    if (length <= 55 && form !== 'long') return (base + length).toString(16).padStart(2, '0')
    let hex = length.toString(16)
    if (hex.length % 2) hex = `0${hex}`
    return (base + 55 + hex.length / 2).toString(16) + hex
  }
  if (typeof item === 'string') {
    const bytes = item.slice(2)
    if (bytes.length === 2 && parseInt(bytes, 16) < 0x80 && form !== 'prefixed' && form !== 'long') return bytes
    return header(0x80, bytes.length / 2) + bytes
  }
  const payload = item.map((inner) => encode(inner, bend)).join('')
  return header(0xc0, payload.length / 2) + payload
}
const envelopeOf = (fields: Item[], bend?: (item: Item) => 'long' | 'prefixed' | undefined) => `0x76${encode(fields, bend)}` as Hex

describe('T2 anything else is left to ox', () => {
  const base = sign({
    chainId: 31337,
    calls: [{ to: '0x20c0000000000000000000000000000000000000', data: '0xa9059cbb' }],
    gas: 800_000n,
    maxFeePerGas: 40_000_000_000n,
    maxPriorityFeePerGas: 1_000_000_000n,
    nonceKey: 2n ** 256n - 1n,
    nonce: 5n,
    validBefore: 1_900_000_000,
  })
  const fields = Rlp.toHex(OxHex.slice(base, 1)) as Item[]

  test('T2: the test encoder reproduces ox byte for byte (control)', () => {
    expect(envelopeOf(fields)).toBe(base)
    expect(readPlainPayment(base)).toBeDefined()
  })

  const mutations: [string, () => Hex][] = [
    ['an integer with a leading zero byte', () => envelopeOf(fields.map((f, i) => (i === 7 ? '0x0005' : f)))],
    ['zero written as 0x00 instead of the empty string', () => envelopeOf(fields.map((f, i) => (i === 9 ? '0x00' : f)))],
    ['a byte below 0x80 behind a length prefix', () => envelopeOf(fields, (item) => (item === fields[7] ? 'prefixed' : undefined))],
    ['a short string in the long form', () => envelopeOf(fields, (item) => (item === fields[2] ? 'long' : undefined))],
    ['a short list in the long form', () => envelopeOf(fields, (item) => (item === fields[4] ? 'long' : undefined))],
    ['a call of four items', () => envelopeOf(fields.map((f, i) => (i === 4 ? [[...((f as Item[])[0] as Item[]), '0x01']] : f)))],
    [
      'v written as 0 or 1 instead of 27 or 28',
      () => envelopeOf(fields.map((f, i) => (i === 13 ? `${(f as string).slice(0, -2)}0${parseInt((f as string).slice(-2), 16) - 27}` : f))),
    ],
    ['a fee-payer marker', () => envelopeOf(fields.map((f, i) => (i === 11 ? '0x00' : f)))],
    ['an access list', () => envelopeOf(fields.map((f, i) => (i === 5 ? [['0x20c0000000000000000000000000000000000000', []]] : f)))],
    ['an authorization list entry', () => envelopeOf(fields.map((f, i) => (i === 12 ? [['0x01']] : f)))],
    ['a key authorization before the signature', () => envelopeOf([...fields.slice(0, 13), ['0x01'], fields[13]!])],
    ['a trailing byte after the list', () => `${base}00` as Hex],
    ['a truncated envelope', () => base.slice(0, -2) as Hex],
    ['a signature of another length', () => envelopeOf(fields.map((f, i) => (i === 13 ? `${f as string}00` : f)))],
  ]

  test.each(mutations)('T2: %s → not read as the common shape', (_name, make) => {
    const raw = make()
    expect(raw).not.toBe(base)
    expect(readPlainPayment(raw)).toBeUndefined()
    // What ox then makes of it is ox's to say: decoded (and re-encoded before broadcast) or refused.
    try {
      decodeEnvelope(raw)
    } catch (error) {
      expect(error).toBeInstanceOf(Error)
    }
  })
})
