/**
 * A payment method with no chain: a "fake" ledger in memory, for the protocol and settlement
 * tests. Payload `{ type: 'voucher' | 'receipt', token }`: a voucher is settled by the server
 * (like Tempo pull), a receipt was settled by the client (like push).
 */
import { PaymentError, type PaymentMethod, SettlementUnknownError, type Verified } from '../../src/index.js'

export type FakeMethod = PaymentMethod & {
  /** Tokens the ledger knows; each settles once on the "chain". */
  vouchers: Set<string>
  settledOnChain: string[]
  calls: { verify: number; settle: number; recover: number }
  /** Next settle() behaviour. */
  nextSettle: 'ok' | 'fail' | 'unknown' | 'unknown-but-landed'
  landed: Set<string>
}

export function fakeMethod(options: { name?: string; currency?: string; recipient?: string; decimals?: number } = {}): FakeMethod {
  const decimals = options.decimals ?? 6
  const method: FakeMethod = {
    name: options.name ?? 'fake',
    intent: 'charge',
    vouchers: new Set(),
    settledOnChain: [],
    landed: new Set(),
    calls: { verify: 0, settle: 0, recover: 0 },
    nextSettle: 'ok',
    request(charge) {
      const [whole, fraction = ''] = charge.amount.split('.')
      if (fraction.length > decimals) throw new Error(`fake: amount ${charge.amount} has more than ${decimals} decimals`)
      const amount = (BigInt(whole!) * 10n ** BigInt(decimals) + BigInt(fraction.padEnd(decimals, '0') || '0')).toString()
      return {
        amount,
        currency: options.currency ?? 'FAKE',
        recipient: options.recipient ?? 'merchant',
        ...(charge.description !== undefined && { description: charge.description }),
        ...(charge.externalId !== undefined && { externalId: charge.externalId }),
        ...(charge.settle === 'after' && { methodDetails: { supportedModes: ['voucher'] } }),
      }
    },
    async verify({ credential }) {
      method.calls.verify++
      const payload = credential.payload as { type?: unknown; token?: unknown }
      if (typeof payload !== 'object' || payload === null || typeof payload.token !== 'string')
        throw new PaymentError('malformed-credential', 'payload.token must be a string')
      if (payload.type !== 'voucher' && payload.type !== 'receipt') throw new PaymentError('malformed-credential', 'payload.type must be voucher or receipt')
      if (!method.vouchers.has(payload.token)) throw new PaymentError('verification-failed', 'unknown voucher')
      const verified: Verified = {
        status: payload.type === 'receipt' ? 'settled' : 'ready',
        type: payload.type,
        payer: `payer-of-${payload.token}`,
        reference: `ref-${payload.token}`,
        claims: [`fake:token:${payload.token}`],
        validUntil: Date.now() + 60_000,
        data: { token: payload.token },
      }
      return verified
    },
    async settle(verified) {
      method.calls.settle++
      const token = (verified.data as { token: string }).token
      const mode = method.nextSettle
      if (mode === 'fail') throw new PaymentError('settlement-failed', 'the fake chain refused the voucher')
      if (mode === 'unknown') throw new SettlementUnknownError('fake broadcast timed out before sending')
      if (mode === 'unknown-but-landed') {
        method.landed.add(token)
        method.settledOnChain.push(token)
        throw new SettlementUnknownError('fake broadcast response lost')
      }
      method.settledOnChain.push(token)
      method.landed.add(token)
      return { reference: verified.reference, ...(verified.payer && { payer: verified.payer }) }
    },
    async recover(verified) {
      method.calls.recover++
      const token = (verified.data as { token: string }).token
      if (!method.landed.has(token)) {
        method.landed.add(token)
        method.settledOnChain.push(token)
      }
      return { reference: verified.reference, ...(verified.payer && { payer: verified.payer }) }
    },
  }
  return method
}
