/**
 * Binding a payment to its challenge. A pushed transaction is public: without a binding, anyone
 * could present someone else's transfer as their payment. The mppx client writes an MPP
 * attribution memo on its transfer; bytes 25–31 commit to the challenge id and bytes 5–14 to
 * the realm, so a transfer made for one challenge cannot pay another.
 *
 * Layout (32 bytes): 0–3 keccak256("mpp")[0..3] · 4 version 0x01 · 5–14 keccak256(realm)[0..9]
 * · 15–24 client fingerprint or zeros (not checked) · 25–31 keccak256(challengeId)[0..6].
 *
 * A transaction answers ONE challenge: a transfer attributed to another challenge never counts,
 * in pull or push. Claims on a transaction hash lapse with the challenge that used it, while a
 * challenge issued later may still be open; were another challenge's memo allowed, the same
 * transfers could pay that challenge too once the first one's claims had lapsed.
 */
import { type Hex, keccak256, stringToHex } from 'viem'

const tag = keccak256(stringToHex('mpp')).slice(2, 10)
const version = '01'

const fingerprint = (value: string, bytes: number) => keccak256(stringToHex(value)).slice(2, 2 + bytes * 2)

// A server has a handful of realms: their fingerprints are kept (bounded), not hashed per payment.
const realms = new Map<string, string>()
function realmFingerprint(realm: string): string {
  let value = realms.get(realm)
  if (value === undefined) {
    if (realms.size >= 64) realms.clear()
    value = fingerprint(realm, 10)
    realms.set(realm, value)
  }
  return value
}

/** Whether `memo` is an MPP attribution memo for this realm and challenge. */
export function isChallengeMemo(memo: Hex | undefined, challenge: { id: string; realm: string }): boolean {
  if (memo?.length !== 66) return false
  const hex = memo.slice(2).toLowerCase()
  return (
    hex.slice(0, 8) === tag &&
    hex.slice(8, 10) === version &&
    hex.slice(10, 30) === realmFingerprint(challenge.realm) &&
    hex.slice(50, 64) === fingerprint(challenge.id, 7)
  )
}

/**
 * The first transfer attributed to an MPP challenge other than this one (another id or realm),
 * if any. Memos that are not MPP attribution memos (a route's own memo) do not matter here.
 */
export function foreignMemo<T extends { memo?: Hex | undefined }>(transfers: readonly T[], challenge: { id: string; realm: string }): T | undefined {
  return transfers.find(
    (transfer) =>
      transfer.memo !== undefined &&
      transfer.memo.length === 66 &&
      transfer.memo.slice(2, 10).toLowerCase() === tag &&
      !isChallengeMemo(transfer.memo, challenge),
  )
}

/** The attribution memo for a challenge (anonymous client), e.g. to pay a push route by hand. */
export function challengeMemo(challenge: { id: string; realm: string }): Hex {
  return `0x${tag}${version}${fingerprint(challenge.realm, 10)}${'0'.repeat(20)}${fingerprint(challenge.id, 7)}`
}
