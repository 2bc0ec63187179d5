/**
 * The transfer readers against viem's ABI codec: calls and logs are read straight from their
 * hex on the common path, and must agree with a full ABI decode on every input, canonical or not.
 * Chain-free; T2 (what a pull transaction pays) and T5 (what a receipt's logs record).
 */
import fc from 'fast-check'
import { type Address, decodeEventLog, decodeFunctionData, encodeEventTopics, encodeFunctionData, getAddress, type Hex } from 'viem'
import { describe, expect, test } from 'vitest'
import { PaymentError } from '../../src/protocol/problem.js'
import { tip20 } from '../../src/tempo/abi.js'
import { transfersFromCalls, transfersFromLogs } from '../../src/tempo/transfers.js'

const currency = '0x20c0000000000000000000000000000000000000' as Address
const hexOf = (bytes: number) => fc.uint8Array({ minLength: bytes, maxLength: bytes }).map((b) => `0x${Buffer.from(b).toString('hex')}` as Hex)
const address = hexOf(20).map((a) => a as Address)
const amount = fc.bigInt({ min: 0n, max: 2n ** 256n - 1n })

/** What a full ABI decode says a call pays, or the refusal (only "is a transfer" matters here). */
function reference(input: Hex): { to: string; amount: bigint; memo?: string } | 'refused' {
  // Hex is case-insensitive (a call's data comes out of RLP in lower case anyway).
  const data = input.toLowerCase() as Hex
  try {
    const decoded = decodeFunctionData({ abi: tip20, data })
    if (decoded.functionName !== 'transfer' && decoded.functionName !== 'transferWithMemo') return 'refused'
    const canonical = encodeFunctionData({ abi: tip20, functionName: decoded.functionName, args: decoded.args } as never)
    if (canonical.toLowerCase() !== data.toLowerCase()) return 'refused'
    const [to, value, memo] = decoded.args as readonly [Address, bigint, Hex?]
    return { to: to.toLowerCase(), amount: value, ...(memo !== undefined && { memo: memo.toLowerCase() }) }
  } catch {
    return 'refused'
  }
}

function ours(data: Hex): { to: string; amount: bigint; memo?: string } | 'refused' {
  try {
    const [effect] = transfersFromCalls([{ to: currency, data }], currency)
    return { to: effect!.to.toLowerCase(), amount: effect!.amount, ...(effect!.memo !== undefined && { memo: effect!.memo.toLowerCase() }) }
  } catch (error) {
    expect(error).toBeInstanceOf(PaymentError)
    return 'refused'
  }
}

/** Canonical calldata, then ways of bending it. */
const calldata = fc
  .tuple(
    address,
    amount,
    fc.option(hexOf(32), { nil: undefined }),
    fc.constantFrom('as is', 'upper case', 'trailing byte', 'dirty padding', 'truncated', 'checksummed'),
  )
  .map(([to, value, memo, bend]) => {
    let data =
      memo === undefined
        ? encodeFunctionData({ abi: tip20, functionName: 'transfer', args: [to, value] })
        : encodeFunctionData({ abi: tip20, functionName: 'transferWithMemo', args: [to, value, memo] })
    if (bend === 'upper case') data = `0x${data.slice(2).toUpperCase()}` as Hex
    if (bend === 'trailing byte') data = `${data}00` as Hex
    if (bend === 'dirty padding') data = `${data.slice(0, 10)}01${data.slice(12)}` as Hex
    if (bend === 'truncated') data = data.slice(0, -2) as Hex
    if (bend === 'checksummed') data = `${data.slice(0, 34)}${getAddress(to).slice(2)}${data.slice(74)}` as Hex
    return data
  })

describe('T2 transfer calls', () => {
  test('T2: every call, canonical or bent, is read exactly as a full ABI decode reads it', () => {
    fc.assert(
      fc.property(calldata, (data) => {
        expect(ours(data)).toEqual(reference(data))
      }),
      { numRuns: 2_000 },
    )
  })

  test('T2: the canonical forms are accepted (control: the property above is not all refusals)', () => {
    const to = '0x1111111111111111111111111111111111111111'
    expect(ours(encodeFunctionData({ abi: tip20, functionName: 'transfer', args: [to, 10_000n] }))).toEqual({ to, amount: 10_000n })
    expect(ours(encodeFunctionData({ abi: tip20, functionName: 'approve', args: [to, 1n] }))).toBe('refused')
  })
})

type Log = { address: string; topics: Hex[]; data: Hex; logIndex?: string }

function referenceLogs(logs: Log[]) {
  const out: { kind: string; from: string; to: string; amount: bigint; memo?: string }[] = []
  for (const log of logs) {
    if (log.address.toLowerCase() !== currency) continue
    // The token's Transfer events carry exactly one word of data; viem would ignore extra bytes,
    // this reader does not read such a log at all (stricter: nothing the token emits).
    if (log.data.length !== 66) continue
    try {
      // JSON-RPC hex is case-insensitive: a log reads the same in either case.
      const topics = log.topics.map((t) => t.toLowerCase()) as [Hex, ...Hex[]]
      const event = decodeEventLog({ abi: tip20, topics, data: log.data.toLowerCase() as Hex, strict: true })
      const args = event.args as { from: Address; to: Address; amount: bigint; memo?: Hex }
      out.push({
        kind: event.eventName,
        from: args.from.toLowerCase(),
        to: args.to.toLowerCase(),
        amount: args.amount,
        ...(args.memo && { memo: args.memo.toLowerCase() }),
      })
    } catch {}
  }
  return out
}

const log = fc
  .tuple(
    address,
    address,
    amount,
    hexOf(32),
    fc.constantFrom('Transfer', 'TransferWithMemo'),
    fc.constantFrom('as is', 'extra data', 'short data', 'missing topic', 'other emitter', 'upper case'),
  )
  .map(([from, to, value, memo, name, bend]): Log => {
    const topics = (
      name === 'Transfer'
        ? encodeEventTopics({ abi: tip20, eventName: 'Transfer', args: { from, to } })
        : encodeEventTopics({ abi: tip20, eventName: 'TransferWithMemo', args: { from, to, memo } })
    ) as Hex[]
    let data = `0x${value.toString(16).padStart(64, '0')}` as Hex
    let emitter: string = currency
    if (bend === 'extra data') data = `${data}00` as Hex
    if (bend === 'short data') data = data.slice(0, -2) as Hex
    if (bend === 'missing topic') topics.pop()
    if (bend === 'other emitter') emitter = '0x20c0000000000000000000000000000000000001'
    if (bend === 'upper case')
      return { address: emitter, topics: topics.map((t) => `0x${t.slice(2).toUpperCase()}` as Hex), data: `0x${data.slice(2).toUpperCase()}` as Hex }
    return { address: emitter, topics, data }
  })

describe('T5 transfer logs', () => {
  test('T5: each log is read as a strict ABI decode of a log emitted by the currency reads it', () => {
    fc.assert(
      fc.property(log, (one) => {
        const effects = transfersFromLogs([one], currency)
        const expected = referenceLogs([one])
        expect(effects.map((e) => ({ from: e.from!.toLowerCase(), to: e.to.toLowerCase(), amount: e.amount, memo: e.memo?.toLowerCase() }))).toEqual(
          expected.map((e) => ({ from: e.from, to: e.to, amount: e.amount, memo: e.memo })),
        )
      }),
      { numRuns: 2_000 },
    )
  })

  test('T5: a transferWithMemo (Transfer then TransferWithMemo of the same parties and amount) is one transfer carrying the memo', () => {
    const from = '0x1111111111111111111111111111111111111111'
    const to = '0x2222222222222222222222222222222222222222'
    const memo = `0x${'ab'.repeat(32)}` as Hex
    const data = `0x${10_000n.toString(16).padStart(64, '0')}` as Hex
    const logs: Log[] = [
      { address: currency, topics: encodeEventTopics({ abi: tip20, eventName: 'Transfer', args: { from, to } }) as Hex[], data, logIndex: '0x4' },
      { address: currency, topics: encodeEventTopics({ abi: tip20, eventName: 'TransferWithMemo', args: { from, to, memo } }) as Hex[], data, logIndex: '0x5' },
    ]
    expect(transfersFromLogs(logs, currency)).toEqual([{ token: currency, from, to, amount: 10_000n, memo, origin: 'log 4' }])
  })
})
