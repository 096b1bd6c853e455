"""The Python twin of ../node/iiiapp.mjs: an app written for iii v0.22 (an
HTTP route counting visits in state, a custom stream backend for the stream
"custom" registered with create_stream), printing the same COMPAT events.
It exits on stdin EOF."""

import json
import os
import sys
import threading
import time

from iii import InitOptions, register_worker
from iii.helpers import create_stream
from iii.stream import IStream
from iii_helpers.stream import StreamDeleteResult, StreamSetResult

_out = threading.Lock()


def emit(event):
    with _out:
        sys.stdout.write("COMPAT " + json.dumps(event) + "\n")
        sys.stdout.flush()


iii = register_worker(os.environ["III_URL"], InitOptions(worker_name="iii-app"))


async def hello(req):
    name = req["path_params"]["name"]
    prev = await iii.trigger_async({"function_id": "state::get", "payload": {"scope": "visits", "key": name}})
    visits = (prev or 0) + 1
    await iii.trigger_async({"function_id": "state::set", "payload": {"scope": "visits", "key": name, "value": visits}})
    return {"status_code": 200, "body": {"hello": name, "visits": visits, "first": prev is None}}


iii.register_function("app::hello", hello)
iii.register_trigger({"type": "http", "function_id": "app::hello", "config": {"api_path": "hello/:name", "http_method": "GET"}})

groups = {}  # group_id -> {item_id: data}


def logged(op, inp):
    emit({"event": "backend", "op": op, "input": inp.model_dump(exclude_none=True)})


class Backend(IStream):
    async def get(self, input):
        logged("get", input)
        return groups.get(input.group_id, {}).get(input.item_id)

    async def set(self, input):
        logged("set", input)
        old = groups.setdefault(input.group_id, {}).get(input.item_id)
        groups[input.group_id][input.item_id] = input.data
        return StreamSetResult(old_value=old, new_value=input.data)

    async def delete(self, input):
        logged("delete", input)
        old = groups.get(input.group_id, {}).pop(input.item_id, None)
        return StreamDeleteResult(old_value=old)

    async def list(self, input):
        logged("list", input)
        return list(groups.get(input.group_id, {}).values())

    async def list_groups(self, input):
        logged("list_groups", input)
        return list(groups.keys())

    async def update(self, input):
        return None


create_stream(iii, "custom", Backend())

want = {"app::hello", "stream::get(custom)", "stream::set(custom)", "stream::list_groups(custom)"}
while True:
    try:
        res = iii.trigger({"function_id": "engine::functions::list", "payload": {}, "timeout_ms": 2000})
        if want <= {f["function_id"] for f in (res or {}).get("functions", [])}:
            break
    except Exception:
        pass
    time.sleep(0.05)


def kind(v):
    return "undefined" if v is None else type(v).__name__


get = lambda fid, payload: iii.trigger({"function_id": fid, "payload": payload})
emit({
    "event": "missing",
    "state": kind(get("state::get", {"scope": "nobody", "key": "nothing"})),
    "stream": kind(get("stream::get", {"stream_name": "plain", "group_id": "g", "item_id": "nothing"})),
    "custom": kind(get("stream::get", {"stream_name": "custom", "group_id": "g", "item_id": "nothing"})),
})

iii.register_trigger({"type": "http", "function_id": "app::hello", "config": {"api_path": "hello/:who", "http_method": "GET"}})
iii.trigger({"function_id": "engine::functions::list", "payload": {}})
emit({"event": "ready"})

for _ in sys.stdin:
    pass
iii.shutdown()
