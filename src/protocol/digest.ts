/** RFC 9530 content digest of a request body (C7): `sha-256=:<base64>:`. */
import { Base64, Hash } from 'ox'

export function contentDigest(body: Uint8Array): string {
  return `sha-256=:${Base64.fromBytes(Hash.sha256(body, { as: 'Bytes' }))}:`
}
