// Runs one unpaid request against the consumer app: a 402 with a Payment challenge.
import { app } from './app.js'

const response = await app.request('http://consumer.test/paid')
const challenge = response.headers.get('www-authenticate') ?? ''
if (response.status !== 402 || !challenge.startsWith('Payment ')) {
  throw new Error(`expected a 402 with a Payment challenge, got ${response.status} ${challenge}`)
}
console.log(JSON.stringify({ status: response.status, scheme: challenge.split(' ')[0] }))
