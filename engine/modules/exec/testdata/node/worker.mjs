// The exec module's Node test worker, on the published iii-sdk (linked
// from engine/compat/testdata/node): echo::hello returns the version in
// version.txt and serves GET /echo/hello; echo::tick runs every second
// (cron) and reports its scheduled time to ticks::record. SIGTERM shuts the
// SDK down and exits 0, as the scaffolded workers do.
import { readFileSync } from 'node:fs'
import { registerWorker, TriggerAction } from 'iii-sdk'

const version = readFileSync('version.txt', 'utf8').trim()
const iii = registerWorker(process.env.III_URL, { workerName: process.env.III_WORKER_NAME })

iii.registerFunction('echo::hello', async () => ({ version }))
iii.registerFunction('echo::tick', async (req) => {
  await iii.trigger({
    function_id: 'ticks::record',
    payload: { scheduled_time: req?.scheduled_time, version, pid: process.pid },
    action: TriggerAction.Void(),
  })
  return null
})
iii.registerTrigger({ type: 'http', function_id: 'echo::hello', config: { api_path: 'echo/hello', http_method: 'GET' } })
iii.registerTrigger({ type: 'cron', function_id: 'echo::tick', config: { expression: '* * * * * *' } })

const stop = async () => {
  await iii.shutdown()
  process.exit(0)
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
console.log('ready', version)
