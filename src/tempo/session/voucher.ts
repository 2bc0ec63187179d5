/**
 * Session vouchers (draft-tempo-session-00, "Voucher Signing Format", contract-backed v1): an
 * EIP-712 signature over `Voucher(bytes32 channelId,uint128 cumulativeAmount)` in the domain
 * `{ name: "Tempo Stream Channel", version: "1", chainId, verifyingContract: escrow }`.
 *
 * Verified locally (a hash and one public-key recovery, no RPC): the escrow checks the same
 * digest when the voucher is settled, so what this accepts the chain accepts. Signatures are 65
 * bytes (`v` 27/28 or 0/1) or 64 bytes (EIP-2098); a high-`s` signature is refused, as the escrow
 * refuses it.
 */
import { AbiParameters, Hash, Hex, Secp256k1 } from 'ox'
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

/** Who signed `signature` over `digest`; undefined for a malformed or high-`s` signature. */
export function recoverSigner(digest: Hex.Hex, signature: string): Address | undefined {
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
  try {
    return Secp256k1.recoverAddress({ payload: digest, signature: { r, s, yParity } }) as Address
  } catch {
    return undefined
  }
}
