"""A Python iii-sdk 0.25.0 worker for engine/compat's rust_test.go: the
twin of ../rust/src/main.rs. It serves the engine's built-in sources through
``iii.observe`` (register_trigger is deprecated in 0.25), and one route through
the deprecated ``register_trigger`` beside them.

Environment: III_URL, SRC_PREFIX, SRC_ROUTE, SRC_TOPIC, SRC_SCOPE, SRC_CRON
and SRC_QUEUE as in main.rs, plus SRC_LEGACY_ROUTE (a path bound to
<prefix>::echo with register_trigger). It prints ``ready <name>`` or
``rejected <name> <code>`` per observer, then ``all-answered``; what its
targets receive is returned by ``<prefix>::events``. It exits when stdin
closes.
"""

import os
import sys
import threading
import warnings

from iii import InitOptions, register_worker
from iii.errors import ObserveRejection

warnings.simplefilter("ignore", DeprecationWarning)


def env(key, default=None):
    return os.environ.get(key) or default


URL = env("III_URL", "ws://127.0.0.1:49134")
PREFIX = env("SRC_PREFIX", "py")
ROUTE = env("SRC_ROUTE", f"/{PREFIX}/hello/:name")
TOPIC = env("SRC_TOPIC", f"{PREFIX}-topic")
SCOPE = env("SRC_SCOPE", f"{PREFIX}-scope")

iii = register_worker(URL, InitOptions(worker_name=PREFIX))
events = []
lock = threading.Lock()


def out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def recorder(kind):
    def handler(data):
        with lock:
            events.append({"kind": kind, "input": data})
        return {"ok": True}

    return handler


def events_fn(_data):
    with lock:
        return list(events)


def hello(req):
    name = (req.get("path_params") or {}).get("name", "nobody")
    return {
        "status_code": 201,
        "headers": {"x-worker": "python"},
        "body": {"message": f"hello {name}", "query": req.get("query_params")},
    }


iii.register_function(f"{PREFIX}::echo", lambda data: {"echo": data.get("body") if isinstance(data, dict) else data})
iii.register_function(f"{PREFIX}::events", events_fn)
iii.register_function(f"{PREFIX}::hello", hello)
for kind, fn in [("publish", "on-topic"), ("state", "on-state"), ("cron", "on-tick"), ("queue", "on-queue")]:
    iii.register_function(f"{PREFIX}::{fn}", recorder(kind))

if env("SRC_LEGACY_ROUTE"):
    iii.register_trigger({"type": "http", "function_id": f"{PREFIX}::echo",
                          "config": {"api_path": env("SRC_LEGACY_ROUTE"), "http_method": "POST"}})

observers = [
    ("route", iii.observe({"function_id": "http::on-request", "args": {"method": "GET", "path": ROUTE}},
                          f"{PREFIX}::hello")),
    ("topic", iii.observe({"function_id": "publish", "filters": {"input.topic": {"$eq": TOPIC}},
                           "deliver": "input"}, f"{PREFIX}::on-topic")),
    ("state", iii.observe({"function_id": "state::on-changed", "filters": {"input.scope": {"$eq": SCOPE}},
                           "deliver": "input"}, f"{PREFIX}::on-state")),
    ("taken-route", iii.observe({"function_id": "http::on-request", "args": {"method": "GET", "path": ROUTE}},
                                f"{PREFIX}::echo")),
    ("bad-route", iii.observe({"function_id": "http::on-request", "args": {"method": "GET"}},
                              f"{PREFIX}::hello")),
]
if env("SRC_CRON"):
    observers.append(("cron", iii.observe({"function_id": "cron::on-tick", "args": {"expression": env("SRC_CRON")}},
                                          f"{PREFIX}::on-tick")))
if env("SRC_QUEUE"):
    observers.append(("queue", iii.observe({"function_id": "queue::on-message", "args": {"topic": env("SRC_QUEUE")}},
                                           f"{PREFIX}::on-queue")))

for name, handle in observers:
    try:
        handle.ready(timeout=20)
        out(f"ready {name}")
    except ObserveRejection as e:
        out(f"rejected {name} {e.code}")
    except TimeoutError:
        out(f"rejected {name} TIMEOUT")
out("all-answered")

for _ in sys.stdin:
    pass
iii.shutdown()
