/**
 * The committed artifact (src/tempo/session/escrow-artifact.ts) is what solc makes of
 * contracts/TempoSessionEscrow.sol today, so neither can change without the other; and the ABI
 * is the one the reference client (mppx) calls. Compiles once for the file (solc-js, ~5 s).
 */
import { readFileSync } from 'node:fs'
import { SessionLegacy } from 'mppx/tempo'
import { type AbiFunction, type AbiParameter, toEventSelector, toFunctionSelector } from 'viem'
import { formatAbiItem } from 'viem/utils'
import { beforeAll, describe, expect, test } from 'vitest'
import { artifactPath, compileEscrow, type EscrowArtifact, renderArtifact } from '../../scripts/compile-contracts.js'
import { escrowAbi } from '../../src/tempo/session/escrow-artifact.js'

/** Names and types of parameters, tuples included (not the compiler's internal type names). */
const shape = (params: readonly AbiParameter[]): string =>
  params.map((p) => `${'components' in p ? `(${shape(p.components)})` : ''}${p.type} ${p.name ?? ''}`).join(', ')

describe('escrow artifact', () => {
  let compiled: EscrowArtifact
  beforeAll(() => {
    compiled = compileEscrow()
  })

  test('the committed artifact matches a fresh compile of the contract (run `npm run build:contracts`)', () => {
    const committed = readFileSync(new URL(`../../${artifactPath}`, import.meta.url), 'utf8')
    expect(committed).toBe(renderArtifact(compiled))
  })

  test('S1–S8: every function, event and error of the reference client’s contract-backed escrow ABI has the same signature in ours (ChannelExpired aside, which the draft does not have)', () => {
    const reference = SessionLegacy.Session.Chain.escrowAbi as readonly { type: string; name?: string }[]
    const ours = escrowAbi as readonly { type: string; name?: string }[]
    const byName = (abi: typeof ours, type: string, name: string) => abi.find((item) => item.type === type && item.name === name)
    for (const item of reference) {
      if (item.type === 'event' && item.name === 'ChannelExpired') continue
      const mine = byName(ours, item.type, item.name!)
      expect(mine, `${item.type} ${item.name}`).toBeDefined()
      // Same selector or topic, and for functions the same outputs (names and tuple order included).
      expect(formatAbiItem(mine as never), `${item.type} ${item.name}`).toBe(formatAbiItem(item as never))
      if (item.type === 'function') {
        expect(toFunctionSelector(mine as AbiFunction)).toBe(toFunctionSelector(item as AbiFunction))
        expect(shape((mine as AbiFunction).outputs)).toBe(shape((item as AbiFunction).outputs))
      }
      if (item.type === 'event') expect(toEventSelector(mine as never)).toBe(toEventSelector(item as never))
    }
  })
})
