/** Imported before the conformance tests: the harness mounts `charge(options, handler)`. */
import { harnessForm } from './support.js'

harnessForm.value = 'handler'
