"""The exec module's Python test worker, on the published iii-sdk (the
compat suite's virtualenv): echo::hello returns the version in version.txt
and serves GET /echo/hello; echo::tick runs every second (cron) and reports
its scheduled time to ticks::record. SIGTERM shuts the SDK down, as the
scaffolded workers do."""

import os
import signal
import threading

from iii import InitOptions, TriggerAction, register_worker

with open("version.txt") as f:
    VERSION = f.read().strip()

iii = register_worker(os.environ["III_URL"], InitOptions(worker_name=os.environ.get("III_WORKER_NAME")))


async def hello(data, metadata=None):
    return {"version": VERSION}


async def tick(data, metadata=None):
    await iii.trigger_async({
        "function_id": "ticks::record",
        "payload": {"scheduled_time": (data or {}).get("scheduled_time"), "version": VERSION, "pid": os.getpid()},
        "action": TriggerAction.Void(),
    })
    return None


iii.register_function("echo::hello", hello)
iii.register_function("echo::tick", tick)
iii.register_trigger({"type": "http", "function_id": "echo::hello",
                      "config": {"api_path": "echo/hello", "http_method": "GET"}})
iii.register_trigger({"type": "cron", "function_id": "echo::tick", "config": {"expression": "* * * * * *"}})

print("ready", VERSION, flush=True)
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: done.set())
signal.signal(signal.SIGINT, lambda *_: done.set())
done.wait()
iii.shutdown()
