/** What every server under test shares: realm, secret, the paid route and its price. */
import type { Address, Hex } from 'viem'

export type ServerConfig = {
  /**
   * `static402`: a bare route answering a recorded 402 of ours byte for byte (the floor for that
   * answer). `forward`: a bare route that takes the same credential, pulls the signed
   * transaction out with no checks at all and broadcasts it: the floor for a paid request.
   * `account`: the same route priced with `accounts().charge` on a ledger in `database`, paid
   * from a prepaid balance by an API key (or per call without one).
   */
  kind: 'bare' | 'ours' | 'mppx' | 'static402' | 'forward' | 'account'
  /** JSON-RPC endpoint the server uses (the counting proxy in the RPC section). */
  rpcUrl: string
  recipient: Address
  /** Private key of the account that sponsors fees (sponsored pull), if any. */
  feePayerKey?: Hex
  /** `fake`: our middleware with the chainless test method (before the Tempo method existed). */
  method?: 'tempo' | 'fake'
  /** Ours: `charge(options, handler)` (default: one route handler) or `charge(options)` then the handler (middleware). */
  form?: 'handler' | 'middleware'
  /** `account`: `pglite` (in memory, inside the server process) or a Postgres URL. */
  database?: string
}

export const realm = 'bench.local'
export const secret = 'bench-secret-0123456789abcdef0123456789abcdef'
export const route = '/paid'
export const amount = '0.01'
/** The account every `account` server tops up at start: its balance covers any run (10^9 pathUSD). */
export const accountBalance = 10n ** 15n
/** The price of `amount` in pathUSD base units (6 decimals). */
export const amountBaseUnits = 10_000n
