// Compat worker for the iii wire-compatibility suite (engine/compat).
//
// It connects to III_URL with the published iii-sdk, registers four
// functions under COMPAT_PREFIX, waits until the engine lists them, prints a
// "ready" event and then obeys one JSON command per stdin line. Everything
// the Go test needs to see is printed as one line "COMPAT <json>" on stdout;
// any other output (the SDK's own console lines) is noise to the test.
//
// Environment:
//   III_URL               engine WebSocket URL (required)
//   COMPAT_PREFIX         function id prefix, e.g. "node" -> node::echo (required)
//   COMPAT_NAME           worker name reported to the engine (default: prefix)
//   COMPAT_RECONNECT_MS   initial reconnect delay in ms (default: SDK default)
//   COMPAT_HEADERS        JSON object of headers for the upgrade request (RBAC auth input)
//   COMPAT_READY          "listed" (default): ready once the engine lists the functions;
//                         "barrier": ready once a call round-trips (for RBAC listeners, where
//                         engine::functions::list may be forbidden and ids prefixed; the
//                         commands' round trips then call engine::compat::barrier, whose
//                         FORBIDDEN or function_not_found answer is the round trip);
//                         "none": ready at once (a worker the engine may refuse)
//
// Functions (<p> = COMPAT_PREFIX):
//   <p>::echo  returns its input plus {"by":"node"}
//   <p>::fail  throws Error("compat failure: boom")
//   <p>::hang  never returns
//   <p>::sink  returns null
//   <p>::flaky throws Error("compat flaky: attempt <n> of <key> fails") while the
//              number of calls with data.key is <= data.fail_times, then
//              returns {key, attempts: n, by: "node"}
// Every handler first prints {"event":"invoked","function_id","data","metadata"}.
//
// Commands (stdin, one JSON object per line):
//   {"op":"call","id","function_id","payload","void"?,"timeout_ms"?,"metadata"?,"enqueue"?}
//       ("enqueue": queue name -> TriggerAction.Enqueue({queue}); the result is the receipt)
//       -> {"event":"result","id","result"} | {"event":"error","id","code","message","stacktrace"}
//          | {"event":"sent","id"} for void calls
//   {"op":"register_type","type_id"}  -> {"event":"type_registered","type_id"}
//   {"op":"unregister_type","type_id"} -> {"event":"type_unregistered","type_id"}
//   {"op":"register_function","ref","function_id","result","call"?} -> {"event":"function_registered","ref"}
//       registers function_id, which prints "invoked" like the others and returns result;
//       with "call" (a function id) it instead triggers that function from inside the
//       handler (so in the handler's trace context) with its own input and returns the
//       callee's result
//   {"op":"register_http","ref","function_id","invocation","description"?} -> {"event":"function_registered","ref"}
//       registers an HTTP-invoked function (registerFunction with an HttpInvocationConfig)
//   {"op":"bind","ref","type_id","function_id","config","metadata"?} -> {"event":"bound","ref"}
//   {"op":"unbind","ref"}            -> {"event":"unbound","ref"}
//   {"op":"exit"}                    -> graceful shutdown, exit 0 (also on stdin EOF)
//   {"op":"log","id","level","message","data"?,"span"?} -> {"event":"logged","id","trace_id","span_id"}
//       logs through the SDK's OTel Logger (a LOGS frame to the engine); with
//       "span" the log is written inside a new span of that name (an OTLP frame)
//   {"op":"flush_otel","id"}         -> {"event":"otel_flushed","id"} once queued telemetry is sent
//   {"op":"register_stream","ref","function_id","mode",...} -> {"event":"function_registered","ref"}
//       registers an HTTP-style function using the request's channels (see streamHandler):
//       mode "sha": reads request_body whole, returns {size, sha256} (prints "body_read")
//       mode "multipart": reads request_body, parses it as multipart/form-data with the
//            request's content-type, returns {parts:[{name, filename, size, sha256}]};
//            a body that does not parse prints "body_error" and returns 400
//       mode "sse": streams cmd.count server-sent events every cmd.interval_ms through the
//            response channel (the @iii-dev/helpers http() wrapper), printing "sse_sent" {i, t}
//       mode "download": streams cmd.size bytes of pattern(i) = i*7 mod 251 as
//            application/octet-stream, then returns nothing
//       mode "consume": reads data.reader (a channel ref another worker passed) whole after
//            cmd.delay_ms, printing "consume_start" {t} and "consumed" {size, sha256}; returns them
//   {"op":"channel_pipe","id","function_id","size","buffer_size"?} -> {"event":"piped","id","result","write_done_t"}
//       creates a channel (createChannel), calls function_id with {reader: readerRef}, writes
//       size bytes of the pattern into the writer stream and ends it
//   {"op":"channel_bad_key","id"} -> {"event":"bad_key","id","error"} reading a channel with a wrong key
//   {"op":"channel_oversized","id","size"} -> {"event":"oversized","id","code","reason"}
//       sends one text message of size bytes on a new channel and reports how its socket closed
// The trigger-type handler prints {"event":"register_trigger"|"unregister_trigger",
// "type_id","id","function_id","config","metadata"}; a binding whose config has
// "reject": true is refused (the handler throws).
//
// register_type, unregister_type, bind and unbind end with a round trip to the
// engine on the same socket, so when their event is printed the engine has
// processed the registration.

import { createInterface } from 'node:readline'
import { createHash } from 'node:crypto'
import { registerWorker, TriggerAction } from 'iii-sdk'
import { createChannel } from 'iii-sdk/helpers'
import { ChannelReader } from 'iii-sdk/channel'
import { http } from '@iii-dev/helpers/http'

const url = process.env.III_URL
const prefix = process.env.COMPAT_PREFIX
if (!url || !prefix) {
  console.error('compat worker: III_URL and COMPAT_PREFIX are required')
  process.exit(2)
}
const name = process.env.COMPAT_NAME || prefix
const reconnectMs = Number(process.env.COMPAT_RECONNECT_MS || 0)

function emit(event) {
  process.stdout.write(`COMPAT ${JSON.stringify(event)}\n`)
}

const readyMode = process.env.COMPAT_READY || 'listed'
const options = { workerName: name }
if (process.env.COMPAT_HEADERS) options.headers = JSON.parse(process.env.COMPAT_HEADERS)
if (reconnectMs > 0) {
  options.reconnectionConfig = { initialDelayMs: reconnectMs, maxDelayMs: reconnectMs * 4 }
}
const worker = registerWorker(url, options)

// plain replaces the SDK's channel objects (request_body, response) by a
// marker, so a request object can be printed and echoed.
function plain(v) {
  if (v instanceof ChannelReader) return '<channel read>'
  if (v && typeof v === 'object' && typeof v.sendMessage === 'function') return '<channel write>'
  if (Array.isArray(v)) return v.map(plain)
  if (v && typeof v === 'object' && !Buffer.isBuffer(v)) {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]))
  }
  return v
}

function invoked(functionId, data, metadata) {
  emit({ event: 'invoked', function_id: functionId, data: plain(data) ?? null, metadata: metadata ?? null })
}

const sha256 = (buf) => createHash('sha256').update(buf).digest('hex')
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

// pattern is the test's byte stream: byte i is i*7 mod 251.
function pattern(offset, n) {
  const b = Buffer.alloc(n)
  for (let i = 0; i < n; i++) b[i] = ((offset + i) * 7) % 251
  return b
}

// writeAll writes size bytes of the pattern into a Writable in 256 KiB
// pieces, honouring backpressure.
async function writeAll(stream, size) {
  for (let off = 0; off < size; ) {
    const n = Math.min(256 << 10, size - off)
    if (!stream.write(pattern(off, n))) await new Promise((r) => stream.once('drain', r))
    off += n
  }
  await new Promise((resolve, reject) => {
    stream.once('error', reject)
    stream.end(resolve)
  })
}

function streamHandler(id, cmd) {
  switch (cmd.mode) {
    case 'sha':
      return async (req) => {
        invoked(id, req)
        const body = await req.request_body.readAll()
        const out = { size: body.length, sha256: sha256(body) }
        emit({ event: 'body_read', function_id: id, ...out })
        return { status_code: 200, body: out }
      }
    case 'multipart':
      return async (req) => {
        invoked(id, req)
        const body = await req.request_body.readAll()
        try {
          const form = await new Response(body, { headers: { 'content-type': req.headers['content-type'] } }).formData()
          const parts = []
          for (const [name, v] of form.entries()) {
            const buf = typeof v === 'string' ? Buffer.from(v) : Buffer.from(await v.arrayBuffer())
            parts.push({ name, filename: typeof v === 'string' ? null : v.name, size: buf.length, sha256: sha256(buf) })
          }
          return { status_code: 200, body: { parts } }
        } catch (err) {
          emit({ event: 'body_error', function_id: id, received: body.length, error: String(err) })
          return { status_code: 400, body: { error: String(err) } }
        }
      }
    case 'sse':
      return http(async (req, res) => {
        invoked(id, req)
        res.status(200)
        res.headers({ 'content-type': 'text/event-stream', 'cache-control': 'no-cache' })
        for (let i = 0; i < (cmd.count ?? 3); i++) {
          await new Promise((r) => res.stream.write(`id: ${i}\ndata: {"n":${i}}\n\n`, r))
          emit({ event: 'sse_sent', function_id: id, i, t: Date.now() })
          await sleep(cmd.interval_ms ?? 200)
        }
        res.close()
      })
    case 'download':
      return http(async (req, res) => {
        invoked(id, req)
        res.status(200)
        res.headers({ 'content-type': 'application/octet-stream', 'x-size': String(cmd.size) })
        await writeAll(res.stream, cmd.size)
      })
    case 'consume':
      return async (data) => {
        invoked(id, data)
        await sleep(cmd.delay_ms ?? 0)
        emit({ event: 'consume_start', function_id: id, t: Date.now() })
        const body = await data.reader.readAll()
        const out = { size: body.length, sha256: sha256(body) }
        emit({ event: 'consumed', function_id: id, ...out })
        return out
      }
  }
  throw new Error(`unknown stream mode ${cmd.mode}`)
}

async function channelPipe(cmd) {
  const ch = await createChannel(worker, cmd.buffer_size)
  const result = worker.trigger({ function_id: cmd.function_id, payload: { reader: ch.readerRef }, timeoutMs: 60000 })
  await writeAll(ch.writer.stream, cmd.size)
  const writeDone = Date.now()
  emit({ event: 'piped', id: cmd.id, result: await result, write_done_t: writeDone, sha256: sha256(pattern(0, cmd.size)) })
}

async function channelBadKey(cmd) {
  const ch = await createChannel(worker)
  const reader = new ChannelReader(url, { ...ch.readerRef, access_key: 'wrong-key' })
  try {
    await reader.readAll()
    emit({ event: 'bad_key', id: cmd.id, error: null })
  } catch (err) {
    emit({ event: 'bad_key', id: cmd.id, error: String(err?.message ?? err) })
  }
}

async function channelOversized(cmd) {
  const ch = await createChannel(worker)
  const closed = new Promise((resolve) => {
    ch.writer.stream.on('error', () => {})
    ch.writer.sendMessage('x'.repeat(cmd.size))
    ch.writer.ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() }))
  })
  emit({ event: 'oversized', id: cmd.id, ...(await closed) })
}

const own = [`${prefix}::echo`, `${prefix}::fail`, `${prefix}::hang`, `${prefix}::sink`]
worker.registerFunction(own[0], async (data, metadata) => {
  invoked(own[0], data, metadata)
  return { ...plain(data), by: 'node' }
})
worker.registerFunction(own[1], async (data, metadata) => {
  invoked(own[1], data, metadata)
  throw new Error('compat failure: boom')
})
worker.registerFunction(own[2], (data, metadata) => {
  invoked(own[2], data, metadata)
  return new Promise(() => {})
})
worker.registerFunction(own[3], async (data, metadata) => {
  invoked(own[3], data, metadata)
  return null
})
const flakyId = `${prefix}::flaky`
const flakyCalls = new Map() // data.key -> calls so far
worker.registerFunction(flakyId, async (data, metadata) => {
  invoked(flakyId, data, metadata)
  const key = String(data?.key ?? '')
  const n = (flakyCalls.get(key) ?? 0) + 1
  flakyCalls.set(key, n)
  if (n <= Number(data?.fail_times ?? 0)) throw new Error(`compat flaky: attempt ${n} of ${key} fails`)
  return { key, attempts: n, by: 'node' }
})

// barrier makes a round trip on this worker's socket: the engine handles a
// connection's frames in order, so everything sent before is processed.
async function barrier() {
  if (readyMode === 'listed') {
    await worker.trigger({ function_id: 'engine::functions::list', payload: {}, timeoutMs: 5000 })
    return
  }
  try {
    await worker.trigger({ function_id: 'engine::compat::barrier', payload: {}, timeoutMs: 5000 })
  } catch (err) {
    if (err?.code === 'TIMEOUT') throw err
  }
}

async function waitForRoundTrip() {
  for (;;) {
    try {
      await worker.trigger({ function_id: 'engine::compat::barrier', payload: {}, timeoutMs: 2000 })
      return
    } catch (err) {
      if (err?.code !== 'TIMEOUT') return
    }
  }
}

async function waitUntilListed() {
  for (;;) {
    try {
      const res = await worker.trigger({
        function_id: 'engine::functions::list',
        payload: {},
        timeoutMs: 2000,
      })
      const ids = new Set((res?.functions ?? []).map((f) => f.function_id))
      if (own.every((id) => ids.has(id))) return
    } catch {
      // Not connected yet, or the call timed out: try again.
    }
    await new Promise((r) => setTimeout(r, 50))
  }
}

const types = new Map() // type id -> ref returned by registerTriggerType
const bindings = new Map() // test ref -> trigger handle

function triggerHandler(typeId) {
  const report = (event, t) =>
    emit({
      event,
      type_id: typeId,
      id: t.id,
      function_id: t.function_id ?? null,
      config: t.config ?? null,
      metadata: t.metadata ?? null,
    })
  return {
    async registerTrigger(t) {
      report('register_trigger', t)
      if (t.config && t.config.reject === true) throw new Error('compat: binding rejected')
    },
    async unregisterTrigger(t) {
      report('unregister_trigger', t)
    },
  }
}

async function call(cmd) {
  const req = { function_id: cmd.function_id, payload: cmd.payload ?? null }
  if (cmd.timeout_ms) req.timeoutMs = cmd.timeout_ms
  if (cmd.metadata !== undefined) req.metadata = cmd.metadata
  if (cmd.enqueue) req.action = TriggerAction.Enqueue({ queue: cmd.enqueue })
  if (cmd.void) {
    req.action = TriggerAction.Void()
    await worker.trigger(req)
    emit({ event: 'sent', id: cmd.id })
    return
  }
  try {
    const result = await worker.trigger(req)
    emit({ event: 'result', id: cmd.id, result: result ?? null })
  } catch (err) {
    emit({
      event: 'error',
      id: cmd.id,
      code: err?.code ?? null,
      message: err?.message ?? String(err),
      stacktrace: err?.stacktrace ?? null,
    })
  }
}

// log writes through the SDK's OTel Logger (loaded on first use: it is the
// iii-sdk's own @iii-dev/helpers dependency, so it shares the SDK's OTel setup).
async function log(cmd) {
  const { Logger, withSpan, currentTraceId, currentSpanId } = await import('@iii-dev/helpers/observability')
  const write = () => {
    new Logger()[cmd.level ?? 'info'](cmd.message, cmd.data)
    return { trace_id: currentTraceId() ?? null, span_id: currentSpanId() ?? null }
  }
  const ids = cmd.span ? await withSpan(cmd.span, {}, async () => write()) : write()
  emit({ event: 'logged', id: cmd.id, ...ids })
}

async function handle(cmd) {
  switch (cmd.op) {
    case 'call':
      return call(cmd)
    case 'register_function': {
      const id = cmd.function_id
      const result = cmd.result ?? null
      const callee = cmd.call
      worker.registerFunction(id, async (data, metadata) => {
        invoked(id, data, metadata)
        if (callee) return worker.trigger({ function_id: callee, payload: data ?? null })
        return result
      })
      await barrier()
      return emit({ event: 'function_registered', ref: cmd.ref })
    }
    case 'register_stream':
      worker.registerFunction(cmd.function_id, streamHandler(cmd.function_id, cmd))
      await barrier()
      return emit({ event: 'function_registered', ref: cmd.ref })
    case 'channel_pipe':
      return channelPipe(cmd)
    case 'channel_bad_key':
      return channelBadKey(cmd)
    case 'channel_oversized':
      return channelOversized(cmd)
    case 'register_http': {
      const opts = cmd.description ? { description: cmd.description } : undefined
      worker.registerFunction(cmd.function_id, cmd.invocation, opts)
      await barrier()
      return emit({ event: 'function_registered', ref: cmd.ref })
    }
    case 'register_type': {
      const ref = worker.registerTriggerType(
        { id: cmd.type_id, description: `compat trigger type ${cmd.type_id}` },
        triggerHandler(cmd.type_id),
      )
      types.set(cmd.type_id, ref)
      await barrier()
      return emit({ event: 'type_registered', type_id: cmd.type_id })
    }
    case 'unregister_type':
      types.get(cmd.type_id)?.unregister()
      types.delete(cmd.type_id)
      await barrier()
      return emit({ event: 'type_unregistered', type_id: cmd.type_id })
    case 'bind': {
      const t = { type: cmd.type_id, function_id: cmd.function_id, config: cmd.config ?? {} }
      if (cmd.metadata !== undefined) t.metadata = cmd.metadata
      bindings.set(cmd.ref, worker.registerTrigger(t))
      await barrier()
      return emit({ event: 'bound', ref: cmd.ref })
    }
    case 'unbind':
      bindings.get(cmd.ref)?.unregister()
      bindings.delete(cmd.ref)
      await barrier()
      return emit({ event: 'unbound', ref: cmd.ref })
    case 'log':
      return log(cmd)
    case 'flush_otel': {
      const { flushOtel } = await import('@iii-dev/helpers/observability')
      await flushOtel()
      return emit({ event: 'otel_flushed', id: cmd.id })
    }
    case 'exit':
      return quit()
    default:
      return emit({ event: 'bad_command', op: cmd.op ?? null })
  }
}

let quitting = false
async function quit() {
  if (quitting) return
  quitting = true
  try {
    await worker.shutdown()
  } finally {
    process.exit(0)
  }
}

if (readyMode === 'listed') await waitUntilListed()
else if (readyMode === 'barrier') await waitForRoundTrip()
emit({ event: 'ready', name, runtime: 'node' })

const lines = createInterface({ input: process.stdin })
lines.on('line', (line) => {
  if (!line.trim()) return
  let cmd
  try {
    cmd = JSON.parse(line)
  } catch (err) {
    emit({ event: 'bad_command', error: String(err) })
    return
  }
  handle(cmd).catch((err) => emit({ event: 'command_failed', op: cmd.op ?? null, error: String(err) }))
})
lines.on('close', () => {
  quit()
})
