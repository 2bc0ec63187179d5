/**
 * The one database seam of the accounts ledger: a `SqlClient` runs parameterised SQL and
 * transactions. The ledger speaks plain Postgres through it, so the same statements run on PGlite
 * (Postgres compiled to WASM, embedded) and on a real Postgres server. The adapters are typed
 * structurally: this module imports no driver (src/ runs on Workers too).
 *
 * Parameters are `$1, $2, ...`; money travels as decimal strings (cast with `::numeric` in SQL)
 * and comes back as text (cast with `::text`), so no driver's number parsing is involved.
 */

export interface SqlClient {
  /** One statement with `$n` parameters; resolves to its rows. */
  query<Row = Record<string, unknown>>(text: string, params?: readonly unknown[]): Promise<Row[]>
  /**
   * Runs `fn` in one transaction: committed when `fn` resolves, rolled back when it throws (and the
   * error rethrown). Inside, `tx.transaction` runs in the same transaction (no nesting).
   */
  transaction<T>(fn: (tx: SqlClient) => Promise<T>): Promise<T>
}

/** What the ledger needs from a PGlite instance (`new PGlite()` from `@electric-sql/pglite`). */
export type PgliteLike = {
  query(text: string, params?: unknown[]): Promise<{ rows: unknown[] }>
  transaction(fn: (tx: PgliteTransactionLike) => Promise<unknown>): Promise<unknown>
}

type PgliteTransactionLike = { query(text: string, params?: unknown[]): Promise<{ rows: unknown[] }> }

/** What the ledger needs from a postgres.js client (`postgres(url)` from `postgres`). */
export type PostgresLike = PostgresRunner & {
  begin(fn: (tx: PostgresRunner) => Promise<unknown>): Promise<unknown>
}

type PostgresRunner = { unsafe(text: string, params?: unknown[]): PromiseLike<readonly unknown[]> }

/** A `SqlClient` over PGlite: `db.query` and `db.transaction`. */
export function fromPglite(db: PgliteLike): SqlClient {
  return {
    async query<Row>(text: string, params: readonly unknown[] = []) {
      const result = await db.query(text, [...params])
      return result.rows as Row[]
    },
    transaction<T>(fn: (tx: SqlClient) => Promise<T>): Promise<T> {
      return db.transaction(async (tx) => {
        const client: SqlClient = {
          async query<Row>(text: string, params: readonly unknown[] = []) {
            const result = await tx.query(text, [...params])
            return result.rows as Row[]
          },
          transaction: (inner) => inner(client),
        }
        return fn(client)
      }) as Promise<T>
    },
  }
}

/** A `SqlClient` over postgres.js: `sql.unsafe(text, params)` and `sql.begin`. */
export function fromPostgres(sql: PostgresLike): SqlClient {
  const wrap = (runner: PostgresRunner): SqlClient['query'] =>
    async function query<Row>(text: string, params: readonly unknown[] = []) {
      const rows = await runner.unsafe(text, [...params])
      return [...rows] as Row[]
    }
  return {
    query: wrap(sql),
    transaction<T>(fn: (tx: SqlClient) => Promise<T>): Promise<T> {
      return sql.begin(async (tx) => {
        const client: SqlClient = { query: wrap(tx), transaction: (inner) => inner(client) }
        return fn(client)
      }) as Promise<T>
    },
  }
}
