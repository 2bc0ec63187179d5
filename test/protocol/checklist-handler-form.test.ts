/**
 * The whole C1–C12 conformance suite again, with the route mounted in the handler form
 * `pay.charge(options, handler)`: both forms must behave identically on the wire, in settlement
 * and when the handler fails.
 */
import './handler-form.js'
import './checklist.test.js'
