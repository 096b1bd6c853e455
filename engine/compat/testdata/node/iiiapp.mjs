// An app written for iii v0.22 as its users write one, for the iii-format
// config test (engine/compat/iiiconfig_test.go): an HTTP route that counts
// visits in state, and a custom stream backend (createStream) for the
// stream "custom" kept in this process's memory.
//
// It prints "COMPAT <json>" lines for the Go test:
//   {"event":"missing","state":<typeof>,"stream":<typeof>,"custom":<typeof>}
//       typeof the result of state::get, stream::get and stream::get on the
//       custom stream for items that do not exist ("undefined" in iii)
//   {"event":"backend","op","input"}  every call of the custom backend
//   {"event":"ready"}                 once everything is registered
// It exits on stdin EOF.

import { createInterface } from 'node:readline'
import { registerWorker } from 'iii-sdk'
import { createStream } from 'iii-sdk/helpers'

const emit = (event) => process.stdout.write(`COMPAT ${JSON.stringify(event)}\n`)

const iii = registerWorker(process.env.III_URL, { workerName: 'iii-app' })

iii.registerFunction('app::hello', async (req) => {
  const name = req.path_params.name
  const prev = await iii.trigger({ function_id: 'state::get', payload: { scope: 'visits', key: name } })
  const visits = (prev ?? 0) + 1
  await iii.trigger({ function_id: 'state::set', payload: { scope: 'visits', key: name, value: visits } })
  return { status_code: 200, body: { hello: name, visits, first: prev === undefined } }
})
iii.registerTrigger({ type: 'http', function_id: 'app::hello', config: { api_path: 'hello/:name', http_method: 'GET' } })

// The custom backend: groups of items in memory.
const groups = new Map() // group_id -> Map(item_id -> data)
const group = (id) => {
  if (!groups.has(id)) groups.set(id, new Map())
  return groups.get(id)
}
const logged = (op, fn) => async (input) => {
  emit({ event: 'backend', op, input })
  return fn(input)
}
createStream(iii, 'custom', {
  get: logged('get', async ({ group_id, item_id }) => groups.get(group_id)?.get(item_id) ?? null),
  set: logged('set', async ({ group_id, item_id, data }) => {
    const old = group(group_id).get(item_id)
    group(group_id).set(item_id, data)
    return { old_value: old ?? null, new_value: data }
  }),
  delete: logged('delete', async ({ group_id, item_id }) => {
    const old = groups.get(group_id)?.get(item_id)
    groups.get(group_id)?.delete(item_id)
    return { old_value: old ?? null }
  }),
  list: logged('list', async ({ group_id }) => [...(groups.get(group_id)?.values() ?? [])]),
  listGroups: logged('list_groups', async () => [...groups.keys()]),
  update: logged('update', async () => null),
})

const want = ['app::hello', 'stream::get(custom)', 'stream::set(custom)', 'stream::list_groups(custom)']
for (;;) {
  try {
    const res = await iii.trigger({ function_id: 'engine::functions::list', payload: {}, timeoutMs: 2000 })
    const ids = new Set((res?.functions ?? []).map((f) => f.function_id))
    if (want.every((id) => ids.has(id))) break
  } catch {
    // not connected yet
  }
  await new Promise((r) => setTimeout(r, 50))
}

const get = (function_id, payload) => iii.trigger({ function_id, payload })
emit({
  event: 'missing',
  state: typeof (await get('state::get', { scope: 'nobody', key: 'nothing' })),
  stream: typeof (await get('stream::get', { stream_name: 'plain', group_id: 'g', item_id: 'nothing' })),
  custom: typeof (await get('stream::get', { stream_name: 'custom', group_id: 'g', item_id: 'nothing' })),
})

// A second route of the same shape is refused; the SDK logs the engine's
// message on stderr.
iii.registerTrigger({ type: 'http', function_id: 'app::hello', config: { api_path: 'hello/:who', http_method: 'GET' } })
await iii.trigger({ function_id: 'engine::functions::list', payload: {} })

emit({ event: 'ready' })

createInterface({ input: process.stdin }).on('close', async () => {
  await iii.shutdown()
  process.exit(0)
})
