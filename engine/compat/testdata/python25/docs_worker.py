"""iii's current docs (docs/next: creating-workers, using-iii) as one worker,
on iii-sdk 0.25.0, for engine/compat's docs_test.go.

Each example is the docs' code with the engine's URL from III_URL. Where the
docs and the SDK disagree the SDK wins, and the line says so. It prints one
``COMPAT <json>`` line per outcome: {"event": "outcome", "example", ...},
{"event": "invoked", "function_id", "data"} from the handlers, and
{"event": "ready"} once everything is registered and the in-worker examples
ran; the test then drives the HTTP routes. It exits when stdin closes.
The last part is the README of iii-sdk 0.25 (observe), from a worker in a
namespace.
"""

import asyncio
import json
import os
import sys
import threading
import time

from iii import InitOptions, TriggerAction, register_worker
from iii.errors import InvocationError

# The docs import these from iii; 0.25 has them here.
from iii.helpers import create_channel_async
from iii.iii_types import RegisterTriggerTypeInput
from iii.triggers import TriggerConfig, TriggerHandler

URL = os.environ["III_URL"]


_out = threading.Lock()


def emit(event):
    # Handlers run on threads of their own: one line at a time.
    line = "COMPAT " + json.dumps(event, default=str) + "\n"
    with _out:
        sys.stdout.write(line)
        sys.stdout.flush()


def outcome(example, fn):
    try:
        emit({"event": "outcome", "example": example, "result": fn()})
    except InvocationError as err:
        emit({"event": "outcome", "example": example, "code": err.code, "message": str(err)})
    except Exception as err:  # noqa: BLE001 - reported to the test
        emit({"event": "outcome", "example": example, "code": type(err).__name__, "message": str(err)})


def recorded(function_id, result=None):
    def handler(data):
        emit({"event": "invoked", "function_id": function_id, "data": data})
        return result

    return handler


# --- creating-workers/http: an endpoint in namespace orders ---------------
worker = register_worker(
    URL,
    InitOptions(worker_name="my-worker", namespace="orders"),
)


def add(payload: dict) -> dict:
    body = payload["body"]
    return {
        "status_code": 200,
        "body": {"c": body["a"] + body["b"]},
        "headers": {"Content-Type": "application/json"},
    }


worker.register_function("http::add", add)
worker.register_trigger({
    "type": "http",
    "function_id": "http::add",
    "config": {"api_path": "/math/add", "http_method": "POST"},
})

# --- using-iii/triggers: one function, two triggers -------------------------
worker.register_function("reports::generate", recorded("reports::generate", {"status_code": 202, "body": {"queued": True}}))
worker.register_trigger({
    "type": "http",
    "function_id": "reports::generate",
    "config": {"api_path": "/reports/generate", "http_method": "POST"},
    "metadata": {"team": "platform", "env": "staging"},
})
worker.register_trigger({
    "type": "cron",
    "function_id": "reports::generate",
    "config": {"expression": "0 0 9 * * 1"},  # Every Monday at 09:00
})


# --- using-iii/triggers: gate a trigger with a condition --------------------
# The docs read payload["customer_tier"]; an http trigger's condition gets
# the request (iii's shape too), so the tier is in its body.
def is_priority(payload: dict) -> bool:
    return (payload.get("body") or {}).get("customer_tier") == "gold"


worker.register_function("orders::is-priority", is_priority)
worker.register_function("orders::expedite", recorded("orders::expedite", {"status_code": 200, "body": {"expedited": True}}))
worker.register_trigger({
    "type": "http",
    "function_id": "orders::expedite",
    "config": {
        "api_path": "/orders/expedite",
        "http_method": "POST",
        "condition_function_id": "orders::is-priority",
    },
})
# The same gate on a cron trigger (how-to/use-trigger-conditions).
worker.register_function("orders::every-second-ok", recorded("orders::every-second-ok", True))
worker.register_function("orders::tick", recorded("orders::tick"))
worker.register_trigger({
    "type": "cron",
    "function_id": "orders::tick",
    "config": {"expression": "* * * * * *", "condition_function_id": "orders::every-second-ok"},
})

# --- using-iii/triggers: unregister a trigger -------------------------------
gone = worker.register_trigger({
    "type": "http",
    "function_id": "http::add",
    "config": {"api_path": "/math/gone", "http_method": "POST"},
})

# --- creating-workers/queues: consume a durable topic, fifo, dead letters ---
email = register_worker(URL, InitOptions(worker_name="email-worker", namespace="orders"))


def send(msg: dict) -> dict:
    emit({"event": "invoked", "function_id": "email::send", "data": msg})
    return {"sent": True}


email.register_function("email::send", send)
email.register_trigger({
    "type": "durable:subscriber",
    "function_id": "email::send",
    "config": {"topic": "emails"},
})
email.register_function("email::ordered", recorded("email::ordered", {"ok": True}))
email.register_trigger({
    "type": "durable:subscriber",
    "function_id": "email::ordered",
    "config": {"topic": "ordered-emails", "queue_config": {"type": "fifo"}},
})

# --- creating-workers/functions ---------------------------------------------
math = register_worker(URL, InitOptions(worker_name="math-worker", namespace="orders"))


def add_handler(payload: dict) -> dict:
    return {"c": payload["a"] + payload["b"]}


math.register_function(
    "math::add",
    add_handler,
    request_format={
        "type": "object",
        "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
        "required": ["a", "b"],
    },
    response_format={
        "type": "object",
        "properties": {"c": {"type": "number"}},
        "required": ["c"],
    },
    metadata={"owner": "math-team", "public": True},
)


async def write(data, metadata=None):
    return {"ok": True, "metadata": metadata}


math.register_function("audit::write", write)
temporary = math.register_function("math::temporary", add_handler)

# --- creating-workers/triggers: a trigger type of one's own -----------------
bindings: dict = {}


class HttpHandler(TriggerHandler):
    async def register_trigger(self, config: TriggerConfig) -> None:
        bindings[config.id] = config

    async def unregister_trigger(self, config: TriggerConfig) -> None:
        bindings.pop(config.id, None)


publisher = register_worker(URL, InitOptions(worker_name="mini-http-worker", namespace="orders"))
publisher.register_trigger_type(
    RegisterTriggerTypeInput(id="mini-http", description="Routes HTTP requests to bound functions"),
    HttpHandler(),
)
math.register_function("orders::list", recorded("orders::list", {"orders": []}))
mini = math.register_trigger({
    "type": "mini-http",
    "function_id": "orders::list",
    "config": {"api_path": "/orders", "http_method": "GET"},
    "metadata": {"team": "platform"},
})


# --- creating-workers/channels ----------------------------------------------
async def process_file(input: dict) -> dict:
    reader = input["reader"]
    total = 0
    async for chunk in reader:
        total += len(chunk)
    return {"bytes": total}


async def generate_file(input: dict) -> dict:
    writer = input["writer"]
    await writer.write(b"hello ")
    await writer.write(b"world")
    await writer.close_async()
    return {"ok": True}


math.register_function("files::process", process_file)
math.register_function("files::generate", generate_file)


def wait_listed(client, ids):
    """Until engine::functions::list shows every id in namespace orders."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        listed = client.trigger({"function_id": "engine::functions::list", "payload": {}})["functions"]
        have = {f["function_id"] for f in listed if f.get("namespace") == "orders"}
        if set(ids) <= have:
            return
        time.sleep(0.1)
    raise TimeoutError(f"not listed in orders: {sorted(set(ids) - have)}")


wait_listed(math, ["http::add", "orders::is-priority", "email::send", "math::add", "audit::write",
                   "math::temporary", "orders::list", "files::process", "files::generate"])

# --- invoking (using-iii/functions, namespaces) ------------------------------
outcome("trigger", lambda: math.trigger({"function_id": "math::add", "payload": {"a": 2, "b": 3}}))
outcome("trigger in namespace orders", lambda: worker.trigger(
    {"function_id": "math::add", "payload": {"a": 2, "b": 3}, "namespace": "orders"}))
outcome("trigger naming default", lambda: worker.trigger(
    {"function_id": "math::add", "payload": {"a": 2, "b": 3}, "namespace": "default"}))
outcome("void", lambda: math.trigger(
    {"function_id": "math::add", "payload": {"a": 2, "b": 3}, "action": TriggerAction.Void()}))
outcome("per-invocation metadata", lambda: math.trigger(
    {"function_id": "audit::write", "payload": {"x": 1}, "metadata": {"who": "docs"}}))
outcome("trigger_async", lambda: asyncio.run(math.trigger_async(
    {"function_id": "math::add", "payload": {"a": 5, "b": 3}})))
outcome("enqueue", lambda: "messageReceiptId" in worker.trigger({
    "function_id": "email::send",
    "payload": {"to": "a@b.com", "subject": "hi"},
    "action": TriggerAction.Enqueue(queue="email-jobs"),
}))
# The docs publish with `iii trigger` (the default namespace); from a worker
# in orders the publish names it.
outcome("durable publish", lambda: worker.trigger({
    "function_id": "iii::durable::publish",
    "payload": {"topic": "emails", "data": {"to": "a@b.com", "subject": "durable"}},
    "namespace": "default",
}))
outcome("fifo publish", lambda: worker.trigger({
    "function_id": "iii::durable::publish",
    "payload": {"topic": "ordered-emails", "data": {"n": 1}},
    "namespace": "default",
}))
outcome("workers info", lambda: worker.trigger({
    "function_id": "engine::workers::info",
    "payload": {"name": "math-worker", "namespace": "orders"},
})["worker"]["namespace"])
outcome("function metadata", lambda: next(
    f.get("metadata") for f in math.trigger({"function_id": "engine::functions::list", "payload": {}})["functions"]
    if f["function_id"] == "math::add"))


def unregister_function():
    temporary.unregister()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            math.trigger({"function_id": "math::temporary", "payload": {"a": 1, "b": 1}})
        except InvocationError as err:
            return err.code
        time.sleep(0.05)
    return "still served"


outcome("unregister function", unregister_function)


def dispatch_mini_http():
    deadline = time.monotonic() + 10
    while not bindings and time.monotonic() < deadline:
        time.sleep(0.05)
    seen = [(b.function_id, b.config, b.metadata) for b in bindings.values()]
    results = [publisher.trigger({
        "function_id": b.function_id,
        "payload": {"method": "GET", "headers": {}, "body": None},
        "namespace": "orders",
    }) for b in bindings.values()]
    mini.unregister()
    while bindings and time.monotonic() < deadline:
        time.sleep(0.05)
    return {"bindings": seen, "results": results, "after_unregister": len(bindings)}


outcome("trigger type", dispatch_mini_http)


async def channels():
    channel = await create_channel_async(math)
    processing = asyncio.ensure_future(math.trigger_async({
        "function_id": "files::process",
        "payload": {"filename": "report.csv", "reader": channel.reader_ref.model_dump()},
    }))
    await channel.writer.write(b"file contents")
    await channel.writer.close_async()
    processed = await processing
    out = await create_channel_async(math)
    generating = asyncio.ensure_future(math.trigger_async({
        "function_id": "files::generate",
        "payload": {"writer": out.writer_ref.model_dump()},
    }))
    data = b""
    async for chunk in out.reader:
        data += chunk
    await generating
    return {"processed": processed, "generated": data.decode()}


outcome("channels", lambda: asyncio.run(channels()))

# --- reacting to state and stream changes (trigger types state, stream),
# gated by conditions in orders ----------------------------------------------
math.register_function("orders::cart-ok", recorded("orders::cart-ok", True))
math.register_function("orders::on-cart", recorded("orders::on-cart"))
math.register_trigger({
    "type": "state",
    "function_id": "orders::on-cart",
    "config": {"scope": "carts", "condition_function_id": "orders::cart-ok"},
})
math.register_function("orders::user-ok", recorded("orders::user-ok", True))
math.register_function("orders::on-user", recorded("orders::on-user"))
math.register_trigger({
    "type": "stream",
    "function_id": "orders::on-user",
    "config": {"stream_name": "users", "condition_function_id": "orders::user-ok"},
})


def bound(function_ids):
    """Until every function has a binding the engine lists as active."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        rows = math.trigger({"function_id": "engine::registered-triggers::list", "payload": {}})["registered_triggers"]
        if set(function_ids) <= {r["function_id"] for r in rows if r.get("active")}:
            return
        time.sleep(0.1)
    raise TimeoutError(f"not bound: {function_ids}")


bound(["orders::on-cart", "orders::on-user"])
outcome("state set", lambda: math.trigger({
    "function_id": "state::set",
    "payload": {"scope": "carts", "key": "c1", "value": {"items": 1}},
    "namespace": "default",
})["new_value"])
outcome("stream set", lambda: math.trigger({
    "function_id": "stream::set",
    "payload": {"stream_name": "users", "group_id": "active", "item_id": "user-1", "data": {"status": "online"}},
    "namespace": "default",
})["new_value"])

# --- the iii-sdk 0.25 README: observing functions, from a worker in orders --
shop = register_worker(URL, InitOptions(worker_name="shop", namespace="orders"))


def create_order(data):
    return {"status_code": 201, "body": {"id": "123", "item": data["body"]["item"]}}


shop.register_function("orders::create", create_order)


def big_order(envelope):
    emit({"event": "invoked", "function_id": "alerts::big-order", "data": envelope["input"]})


shop.register_function("alerts::big-order", big_order)
observer = shop.observe(
    {"function_id": "orders::create", "filters": {"input.body.total": {"$gte": 500}}},
    "alerts::big-order",
    {"max_in_flight": 4},
)
observer.ready()
outcome("create order", lambda: shop.trigger(
    {"function_id": "orders::create", "payload": {"body": {"item": "widget", "total": 10}}}))
shop.trigger({"function_id": "orders::create", "payload": {"body": {"item": "tv", "total": 900}}})
shop.trigger({"function_id": "orders::create", "payload": {"body": {"item": "tv", "total": 901}}, "dispatch": "remote"})

# The gated route again, as an observer of the engine's http::on-request
# (in default) with its target and condition in orders.
shop.register_function("orders::gate", lambda req: (req.get("body") or {}).get("ok") is True)
shop.register_function("orders::gated", lambda req: {"status_code": 200, "body": {"handled": True}})
route = shop.observe(
    {"function_id": "http::on-request", "namespace": "default",
     "args": {"method": "POST", "path": "/obs/gated", "condition_function_id": "orders::gate"}},
    "orders::gated",
)
route.ready()

gone.unregister()
emit({"event": "ready"})
for _ in sys.stdin:
    pass
for w in (worker, email, math, publisher, shop):
    w.shutdown()
