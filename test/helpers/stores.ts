/** Claim stores that fail on purpose, for the fail-closed and recovery tests. */
import { type ClaimStore, StoreUnavailableError } from '../../src/index.js'
import { memoryStore } from '../../src/stores/memory.js'

/** A memory store whose first attempt to record a challenge as settled times out. */
export function storeFailingToRecordSettlement(): ClaimStore {
  const backing = memoryStore()
  let failed = false
  return {
    claim: backing.claim,
    get: backing.get,
    transition: async (key, from, next, lease) => {
      if (!failed && next?.state === 'settled' && key.startsWith('mpp:challenge:')) {
        failed = true
        throw new StoreUnavailableError('timeout')
      }
      return backing.transition(key, from, next, lease)
    },
  }
}
