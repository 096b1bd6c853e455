// The quickstart's Node worker: GET /hello/:name asks the Go worker for a
// greeting and the Python worker for a score, counts visits in state and
// answers with all three.
import { registerWorker } from 'iii-sdk'

const iii = registerWorker(process.env.III_URL || 'ws://127.0.0.1:49134')

iii.registerFunction('quickstart::hello', async (req) => {
  const name = req?.path_params?.name || req?.name || 'world'
  const [greet, score] = await Promise.all([
    iii.trigger({ function_id: 'quickstart::greet', payload: { name } }),
    iii.trigger({ function_id: 'quickstart::score', payload: { name } }),
  ])
  const visits = await iii.trigger({
    function_id: 'state::update',
    payload: { scope: 'quickstart', key: 'visits', ops: [{ type: 'increment', path: 'count', by: 1 }] },
  })
  return {
    status_code: 200,
    body: { greeting: greet.greeting, score: score.score, visits: visits.new_value.count, by: [greet.by, score.by, 'node'] },
  }
})

iii.registerTrigger({
  type: 'http',
  function_id: 'quickstart::hello',
  config: { api_path: 'hello/:name', http_method: 'GET' },
})

const stop = async () => {
  await iii.shutdown()
  process.exit(0)
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
// The route's address is the http module's: iii dev prints it (and moves
// it with --http-port or --port-base).
console.log('node worker ready: GET /hello/:name')
