/**
 * Session vouchers (draft-tempo-session-00, "Voucher Signing Format", contract-backed v1): an
 * EIP-712 signature over `Voucher(bytes32 channelId,uint128 cumulativeAmount)` in the domain
 * `{ name: "Tempo Stream Channel", version: "1", chainId, verifyingContract: escrow }`.
 *
 * Verified locally (a hash and one signature check, no RPC): the escrow checks the same digest
 * when the voucher is settled, so what this accepts the chain accepts. Signatures are 65 bytes
 * (`v` 27/28 or 0/1) or 64 bytes (EIP-2098); a high-`s` signature is refused, as the escrow
 * refuses it. The escrow takes `v` only as 27/28: the payload parser (payload.ts) rewrites 0/1
 * before a signature is checked or kept.
 *
 * A channel's signer signs many vouchers: `signerKeys()` keeps the public keys it has recovered,
 * with precomputed multiples, so a later voucher costs one verification against a known key
 * (about 2.5× cheaper than a recovery in pure JS) instead of a recovery.
 */
import { AbiParameters, Hash, Hex, Address as OxAddress, Secp256k1 } from 'ox'
import type { Address } from 'viem'

const voucherTypeHash = Hash.keccak256(Hex.fromString('Voucher(bytes32 channelId,uint128 cumulativeAmount)'))
const domainTypeHash = Hash.keccak256(Hex.fromString('EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)'))
const nameHash = Hash.keccak256(Hex.fromString('Tempo Stream Channel'))
const versionHash = Hash.keccak256(Hex.fromString('1'))
const curveOrder = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n
const halfOrder = curveOrder / 2n
export const maxUint128 = (1n << 128n) - 1n

/** The EIP-712 domain separator of one escrow on one chain (computed once per configuration). */
export function domainSeparator(escrow: Address, chainId: number): Hex.Hex {
  return Hash.keccak256(
    AbiParameters.encode(AbiParameters.from(['bytes32', 'bytes32', 'bytes32', 'uint256', 'address']), [
      domainTypeHash,
      nameHash,
      versionHash,
      BigInt(chainId),
      escrow,
    ]),
  )
}

/** The digest a voucher signs. */
export function voucherDigest(domain: Hex.Hex, channelId: Hex.Hex, cumulativeAmount: bigint): Hex.Hex {
  const struct = Hash.keccak256(Hex.concat(voucherTypeHash, channelId, Hex.fromNumber(cumulativeAmount, { size: 32 })))
  return Hash.keccak256(Hex.concat('0x1901', domain, struct))
}

type Parsed = { r: bigint; s: bigint; yParity: number }

/** r, s and the y parity of a 65- or 64-byte signature; undefined if malformed or high-`s`. */
function parse(signature: string): Parsed | undefined {
  if (!/^0x([0-9a-fA-F]{128}|[0-9a-fA-F]{130})$/.test(signature)) return undefined
  const r = BigInt(`0x${signature.slice(2, 66)}`)
  let s: bigint
  let yParity: number
  if (signature.length === 132) {
    s = BigInt(`0x${signature.slice(66, 130)}`)
    const v = Number.parseInt(signature.slice(130, 132), 16)
    if (v === 27 || v === 28) yParity = v - 27
    else if (v === 0 || v === 1) yParity = v
    else return undefined
  } else {
    const vs = BigInt(`0x${signature.slice(66, 130)}`)
    yParity = Number(vs >> 255n)
    s = vs & ((1n << 255n) - 1n)
  }
  if (r === 0n || r >= curveOrder || s === 0n || s > halfOrder) return undefined
  return { r, s, yParity }
}

/** Who signed `signature` over `digest`; undefined for a malformed or high-`s` signature. */
export function recoverSigner(digest: Hex.Hex, signature: string): Address | undefined {
  const parsed = parse(signature)
  if (!parsed) return undefined
  try {
    return Secp256k1.recoverAddress({ payload: digest, signature: parsed }) as Address
  } catch {
    return undefined
  }
}

type Point = InstanceType<typeof Secp256k1.noble.ProjectivePoint>

/** What checking a signature against the expected signer found. */
export type SignerCheck = 'ok' | 'invalid' | 'mismatch'

export type SignerKeys = {
  /**
   * Whether `signature` over `digest` is `signer`'s: exactly what recovering the address and
   * comparing it would decide (`invalid`: malformed, high-`s` or unrecoverable; `mismatch`: another key).
   */
  check(digest: Hex.Hex, signature: string, signer: Address): SignerCheck
  /** How many signers' keys are kept. */
  readonly size: number
}

// A window of 4 bits: about 41 KB of precomputed multiples per key, built in about one recovery's time.
const window = 4

/**
 * Public keys of the signers seen, up to `capacity` (least recently used dropped first). A key
 * enters only from a signature that recovered to its expected signer.
 */
export function signerKeys(capacity = 256): SignerKeys {
  const { ProjectivePoint } = Secp256k1.noble
  const keys = new Map<string, Point>()

  /**
   * `signature` is the key's over `digest` exactly when R = (z/s)·G + (r/s)·Q has x = r and the
   * y parity given: that R is the one ecrecover rebuilds, so it returns Q.
   */
  function verifies(key: Point, digest: Hex.Hex, { r, s, yParity }: Parsed): boolean {
    const w = inverse(s)
    const z = BigInt(digest) % curveOrder
    const u1 = (z * w) % curveOrder
    const u2 = (r * w) % curveOrder
    // Constant-time multiply: it uses the precomputed tables (noble's unsafe path with tables is not relied on).
    const point = u1 === 0n ? key.multiply(u2) : ProjectivePoint.BASE.multiply(u1).add(key.multiply(u2))
    if (point.equals(ProjectivePoint.ZERO)) return false
    const { x, y } = point.toAffine()
    return x === r && Number(y & 1n) === yParity
  }

  return {
    check(digest, signature, signer) {
      const parsed = parse(signature)
      if (!parsed) return 'invalid'
      const id = signer.toLowerCase()
      const known = keys.get(id)
      if (known && verifies(known, digest, parsed)) {
        keys.delete(id)
        keys.set(id, known)
        return 'ok'
      }
      let publicKey: ReturnType<typeof Secp256k1.recoverPublicKey>
      try {
        publicKey = Secp256k1.recoverPublicKey({ payload: digest, signature: parsed })
      } catch {
        return 'invalid'
      }
      if (OxAddress.fromPublicKey(publicKey).toLowerCase() !== id) return 'mismatch'
      if (!known) {
        const key = ProjectivePoint.fromAffine({ x: publicKey.x, y: publicKey.y })
        key._setWindowSize(window)
        if (keys.size >= capacity) keys.delete(keys.keys().next().value as string)
        keys.set(id, key)
      }
      return 'ok'
    },
    get size() {
      return keys.size
    },
  }
}

/** a⁻¹ mod n (extended Euclid; a is in [1, n)). */
function inverse(a: bigint): bigint {
  let [t, next, r, nextR] = [0n, 1n, curveOrder, a]
  while (nextR !== 0n) {
    const q = r / nextR
    ;[t, next] = [next, t - q * next]
    ;[r, nextR] = [nextR, r - q * nextR]
  }
  return t < 0n ? t + curveOrder : t
}
