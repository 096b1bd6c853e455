"""Compat worker for the iii wire-compatibility suite (engine/compat).

The Python twin of ../node/worker.mjs, with the same environment, functions,
commands and events; see that file for the full contract. In short: connect
to III_URL with the published iii-sdk, register <p>::echo/fail/hang/sink
(p = COMPAT_PREFIX), wait until the engine lists them, print
``COMPAT {"event":"ready",...}``, then obey one JSON command per stdin line
and print every observation as one ``COMPAT <json>`` line on stdout.
"""

import asyncio
import email.parser
import email.policy
import hashlib
import json
import os
import sys
import threading
import time

from iii import InitOptions, InvocationError, TriggerAction, register_worker
from iii.channels import ChannelReader, ChannelWriter
from iii.helpers import create_channel_async
from iii_helpers.http import HttpInvocationConfig, http
from iii.triggers import TriggerConfig, TriggerHandler
from iii_helpers.observability import ReconnectionConfig

_out = threading.Lock()


def plain(v):
    """The SDK's channel objects (request_body, response) as a marker, so a
    request object can be printed and echoed."""
    if isinstance(v, ChannelReader):
        return "<channel read>"
    if isinstance(v, ChannelWriter):
        return "<channel write>"
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    return v


def emit(event):
    line = "COMPAT " + json.dumps(plain(event))
    with _out:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


URL = os.environ.get("III_URL")
PREFIX = os.environ.get("COMPAT_PREFIX")
if not URL or not PREFIX:
    sys.stderr.write("compat worker: III_URL and COMPAT_PREFIX are required\n")
    sys.exit(2)
NAME = os.environ.get("COMPAT_NAME") or PREFIX
RECONNECT_MS = int(os.environ.get("COMPAT_RECONNECT_MS") or 0)

READY_MODE = os.environ.get("COMPAT_READY") or "listed"  # see ../node/worker.mjs
options = InitOptions(worker_name=NAME)
if os.environ.get("COMPAT_HEADERS"):
    options.headers = json.loads(os.environ["COMPAT_HEADERS"])
if RECONNECT_MS > 0:
    options.reconnection_config = ReconnectionConfig(
        initial_delay_ms=RECONNECT_MS, max_delay_ms=RECONNECT_MS * 4
    )
worker = register_worker(URL, options)

OWN = [f"{PREFIX}::echo", f"{PREFIX}::fail", f"{PREFIX}::hang", f"{PREFIX}::sink"]


def invoked(function_id, data, metadata):
    emit({"event": "invoked", "function_id": function_id, "data": data, "metadata": metadata})


async def echo(data, metadata=None):
    invoked(OWN[0], data, metadata)
    out = plain(dict(data)) if isinstance(data, dict) else {"input": data}
    out["by"] = "python"
    return out


async def fail(data, metadata=None):
    invoked(OWN[1], data, metadata)
    raise RuntimeError("compat failure: boom")


async def hang(data, metadata=None):
    invoked(OWN[2], data, metadata)
    await asyncio.Event().wait()


async def sink(data, metadata=None):
    invoked(OWN[3], data, metadata)
    return None


for fid, fn in zip(OWN, (echo, fail, hang, sink)):
    worker.register_function(fid, fn)

FLAKY = f"{PREFIX}::flaky"
_flaky_calls = {}  # data["key"] -> calls so far
_flaky_lock = threading.Lock()


async def flaky(data, metadata=None):
    """Fails while the calls with data["key"] are <= data["fail_times"]."""
    invoked(FLAKY, data, metadata)
    data = data if isinstance(data, dict) else {}
    key = str(data.get("key", ""))
    with _flaky_lock:
        n = _flaky_calls.get(key, 0) + 1
        _flaky_calls[key] = n
    if n <= int(data.get("fail_times") or 0):
        raise RuntimeError(f"compat flaky: attempt {n} of {key} fails")
    return {"key": key, "attempts": n, "by": "python"}


worker.register_function(FLAKY, flaky)


def barrier():
    """Round trip on this worker's socket: the engine handles a connection's
    frames in order, so everything sent before has been processed."""
    if READY_MODE == "listed":
        worker.trigger({"function_id": "engine::functions::list", "payload": {}, "timeout_ms": 5000})
        return
    try:
        worker.trigger({"function_id": "engine::compat::barrier", "payload": {}, "timeout_ms": 5000})
    except InvocationError as err:
        if err.code == "TIMEOUT":
            raise


def wait_for_round_trip():
    while True:
        try:
            worker.trigger({"function_id": "engine::compat::barrier", "payload": {}, "timeout_ms": 2000})
            return
        except InvocationError as err:
            if err.code != "TIMEOUT":
                return
        except Exception:  # not connected yet: try again
            time.sleep(0.05)


def wait_until_listed():
    while True:
        try:
            res = worker.trigger(
                {"function_id": "engine::functions::list", "payload": {}, "timeout_ms": 2000}
            )
            ids = {f.get("function_id") for f in (res or {}).get("functions", [])}
            if all(fid in ids for fid in OWN):
                return
        except Exception:  # not connected yet, or timed out: try again
            pass
        time.sleep(0.05)


class Handler(TriggerHandler):
    def __init__(self, type_id):
        self.type_id = type_id

    def _report(self, event, t):
        emit(
            {
                "event": event,
                "type_id": self.type_id,
                "id": t.id,
                "function_id": t.function_id,
                "config": t.config,
                "metadata": t.metadata,
            }
        )

    async def register_trigger(self, config: TriggerConfig) -> None:
        self._report("register_trigger", config)
        if isinstance(config.config, dict) and config.config.get("reject") is True:
            raise RuntimeError("compat: binding rejected")

    async def unregister_trigger(self, config: TriggerConfig) -> None:
        self._report("unregister_trigger", config)


bindings = {}


def now_ms():
    return int(time.time() * 1000)


_PERIOD = bytes((i * 7) % 251 for i in range(251))


def pattern(offset, n):
    """The test's byte stream: byte i is i*7 mod 251 (period 251)."""
    start = offset % 251
    reps = (start + n) // 251 + 1
    return (_PERIOD * reps)[start : start + n]


async def write_all(writer, size):
    off = 0
    while off < size:
        n = min(256 << 10, size - off)
        await writer.write(pattern(off, n))
        off += n
    await writer.close_async()


def parse_multipart(content_type, body):
    """Parts of a multipart/form-data body; ValueError when it is cut off."""
    boundary = None
    for p in content_type.split(";"):
        k, _, v = p.strip().partition("=")
        if k.lower() == "boundary":
            boundary = v.strip('"')
    if not boundary:
        raise ValueError("no boundary in content-type")
    if b"--" + boundary.encode() + b"--" not in body:
        raise ValueError(f"multipart body ends without its closing boundary ({len(body)} bytes)")
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    parts = []
    for part in msg.iter_parts():
        payload = part.get_payload(decode=True) or b""
        parts.append(
            {
                "name": part.get_param("name", header="content-disposition"),
                "filename": part.get_filename(),
                "size": len(payload),
                "sha256": hashlib.sha256(payload).hexdigest(),
            }
        )
    return parts


def stream_handler(fid, cmd):
    mode = cmd["mode"]
    if mode == "sha":

        async def sha(req, metadata=None):
            invoked(fid, req, metadata)
            body = await req["request_body"].read_all()
            out = {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
            emit({"event": "body_read", "function_id": fid, **out})
            return {"status_code": 200, "body": out}

        return sha
    if mode == "multipart":

        async def multipart(req, metadata=None):
            invoked(fid, req, metadata)
            body = await req["request_body"].read_all()
            try:
                parts = parse_multipart(req["headers"].get("content-type", ""), body)
            except Exception as err:
                emit({"event": "body_error", "function_id": fid, "received": len(body), "error": str(err)})
                return {"status_code": 400, "body": {"error": str(err)}}
            return {"status_code": 200, "body": {"parts": parts}}

        return multipart
    if mode == "sse":

        async def sse(req, res):
            invoked(fid, {"method": req.method, "headers": req.headers}, None)
            await res.status(200)
            await res.headers({"content-type": "text/event-stream", "cache-control": "no-cache"})
            for i in range(cmd.get("count", 3)):
                await res.writer.write(f'id: {i}\ndata: {{"n":{i}}}\n\n'.encode())
                emit({"event": "sse_sent", "function_id": fid, "i": i, "t": now_ms()})
                await asyncio.sleep(cmd.get("interval_ms", 200) / 1000)
            await res.writer.close_async()

        return http(sse)
    if mode == "download":

        async def download(req, res):
            invoked(fid, {"method": req.method}, None)
            await res.status(200)
            await res.headers({"content-type": "application/octet-stream", "x-size": str(cmd["size"])})
            await write_all(res.writer, cmd["size"])

        return http(download)
    if mode == "consume":

        async def consume(data, metadata=None):
            invoked(fid, data, metadata)
            await asyncio.sleep(cmd.get("delay_ms", 0) / 1000)
            emit({"event": "consume_start", "function_id": fid, "t": now_ms()})
            body = await data["reader"].read_all()
            out = {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
            emit({"event": "consumed", "function_id": fid, **out})
            return out

        return consume
    raise ValueError(f"unknown stream mode {mode}")


def channel_pipe(cmd):
    async def pipe():
        ch = await create_channel_async(worker, cmd.get("buffer_size"))
        result = asyncio.ensure_future(
            worker.trigger_async(
                {"function_id": cmd["function_id"], "payload": {"reader": ch.reader_ref.model_dump(mode="json")}, "timeout_ms": 60000}
            )
        )
        await write_all(ch.writer, cmd["size"])
        done = now_ms()
        return await result, done

    result, done = worker._run_on_loop(pipe())
    emit(
        {
            "event": "piped",
            "id": cmd["id"],
            "result": result,
            "write_done_t": done,
            "sha256": hashlib.sha256(pattern(0, cmd["size"])).hexdigest(),
        }
    )


def call(cmd):
    req = {"function_id": cmd["function_id"], "payload": cmd.get("payload")}
    if cmd.get("timeout_ms"):
        req["timeout_ms"] = cmd["timeout_ms"]
    if cmd.get("metadata") is not None:
        req["metadata"] = cmd["metadata"]
    if cmd.get("enqueue"):
        req["action"] = TriggerAction.Enqueue(queue=cmd["enqueue"])
    if cmd.get("void"):
        req["action"] = TriggerAction.Void()
        worker.trigger(req)
        emit({"event": "sent", "id": cmd["id"]})
        return
    try:
        result = worker.trigger(req)
        emit({"event": "result", "id": cmd["id"], "result": result})
    except InvocationError as err:
        emit(
            {
                "event": "error",
                "id": cmd["id"],
                "code": err.code,
                "message": err.message,
                "stacktrace": err.stacktrace,
            }
        )


def handle(cmd):
    op = cmd.get("op")
    if op == "call":
        call(cmd)
    elif op == "register_function":
        fid, result = cmd["function_id"], cmd.get("result")

        async def constant(data, metadata=None):
            invoked(fid, data, metadata)
            return result

        worker.register_function(fid, constant)
        barrier()
        emit({"event": "function_registered", "ref": cmd["ref"]})
    elif op == "register_stream":
        worker.register_function(cmd["function_id"], stream_handler(cmd["function_id"], cmd))
        barrier()
        emit({"event": "function_registered", "ref": cmd["ref"]})
    elif op == "channel_pipe":
        channel_pipe(cmd)
    elif op == "register_http":
        worker.register_function(
            cmd["function_id"],
            HttpInvocationConfig(**cmd["invocation"]),
            description=cmd.get("description"),
        )
        barrier()
        emit({"event": "function_registered", "ref": cmd["ref"]})
    elif op == "register_type":
        worker.register_trigger_type(
            {"id": cmd["type_id"], "description": f"compat trigger type {cmd['type_id']}"},
            Handler(cmd["type_id"]),
        )
        barrier()
        emit({"event": "type_registered", "type_id": cmd["type_id"]})
    elif op == "unregister_type":
        worker.unregister_trigger_type({"id": cmd["type_id"]})
        barrier()
        emit({"event": "type_unregistered", "type_id": cmd["type_id"]})
    elif op == "bind":
        bindings[cmd["ref"]] = worker.register_trigger(
            {
                "type": cmd["type_id"],
                "function_id": cmd["function_id"],
                "config": cmd.get("config", {}),
                "metadata": cmd.get("metadata"),
            }
        )
        barrier()
        emit({"event": "bound", "ref": cmd["ref"]})
    elif op == "unbind":
        t = bindings.pop(cmd["ref"], None)
        if t is not None:
            t.unregister()
        barrier()
        emit({"event": "unbound", "ref": cmd["ref"]})
    else:
        emit({"event": "bad_command", "op": op})


def run(cmd):
    try:
        handle(cmd)
    except Exception as err:  # report, keep serving
        emit({"event": "command_failed", "op": cmd.get("op"), "error": repr(err)})


def quit_():
    try:
        worker.shutdown()
    finally:
        os._exit(0)


def main():
    if READY_MODE == "listed":
        wait_until_listed()
    elif READY_MODE == "barrier":
        wait_for_round_trip()
    emit({"event": "ready", "name": NAME, "runtime": "python"})
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            cmd = json.loads(line)
        except ValueError as err:
            emit({"event": "bad_command", "error": str(err)})
            continue
        if cmd.get("op") == "exit":
            break
        # Calls may block (a hanging target), so each command gets a thread;
        # the SDK itself is thread-safe for sync calls from other threads.
        threading.Thread(target=run, args=(cmd,), daemon=True).start()
    quit_()


if __name__ == "__main__":
    main()
