/**
 * `Accept-Payment` (C8): `method/intent;q=0.8, tempo/*, *\/charge;q=0`. Offers are filtered
 * (q=0 excludes) and ordered by preference; a malformed header is ignored (everything offered,
 * in configuration order), as is an absent one.
 */

type Preference = { method: string; intent: string; q: number; specificity: number }

const entry = /^([a-z0-9*][a-z0-9:_*-]*)\/([a-z0-9*][a-z0-9:_*-]*)$/

function parseAcceptPayment(header: string): Preference[] | undefined {
  const preferences: Preference[] = []
  for (const raw of header.split(',')) {
    const [range, ...params] = raw.trim().toLowerCase().split(';')
    if (!range) continue
    const match = entry.exec(range.trim())
    if (!match) return undefined
    let q = 1
    for (const param of params) {
      const [name, value] = param.trim().split('=')
      if (name?.trim() !== 'q') continue
      if (!value || !/^(0(\.\d{0,3})?|1(\.0{0,3})?)$/.test(value.trim())) return undefined
      q = Number(value)
    }
    const method = match[1]!
    const intent = match[2]!
    preferences.push({ method, intent, q, specificity: (method === '*' ? 0 : 2) + (intent === '*' ? 0 : 1) })
  }
  return preferences.length ? preferences : undefined
}

/** Orders `offers` by the client's preference; stable for equal q. */
export function rankOffers<T>(
  offers: readonly T[],
  header: string | null | undefined,
  key: (offer: T) => { method: string; intent: string } = (offer) => offer as { method: string; intent: string },
): T[] {
  if (!header) return [...offers]
  const preferences = parseAcceptPayment(header)
  if (!preferences) return [...offers]
  const scored: { offer: T; q: number; index: number }[] = []
  offers.forEach((offer, index) => {
    const { method, intent } = key(offer)
    let best: Preference | undefined
    for (const preference of preferences)
      if ((preference.method === '*' || preference.method === method) && (preference.intent === '*' || preference.intent === intent))
        if (!best || preference.specificity > best.specificity) best = preference
    const q = best?.q ?? 0
    if (q > 0) scored.push({ offer, q, index })
  })
  scored.sort((a, b) => b.q - a.q || a.index - b.index)
  return scored.map((s) => s.offer)
}
