/** `Payment-Receipt` (C6): base64url JSON, only ever on a 2xx. */
import { base64url, fromBase64url } from './encoding.js'

export type Receipt = {
  status: 'success'
  method: string
  /** RFC 3339 */
  timestamp: string
  reference: string
  externalId?: string
}

export function serializeReceipt(receipt: Receipt): string {
  return base64url(JSON.stringify(receipt))
}

export function parseReceipt(value: string): Receipt {
  const receipt = JSON.parse(fromBase64url(value)) as Receipt
  if (receipt.status !== 'success' || typeof receipt.reference !== 'string' || typeof receipt.method !== 'string') throw new Error('not a Payment-Receipt')
  return receipt
}

/** RFC 3339 at second precision. */
export function rfc3339(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, 'Z')
}
