"""The quickstart's Python worker: quickstart::score, and a cron job that
calls the Node worker every ten seconds."""

import os
import signal
import threading

from iii import InitOptions, register_worker

iii = register_worker(os.environ.get("III_URL", "ws://127.0.0.1:49134"), InitOptions())


async def score(data, metadata=None):
    name = (data or {}).get("name", "")
    return {"score": sum(map(ord, name)) % 100, "by": "python"}


async def tick(data, metadata=None):
    at = (data or {}).get("scheduled_time")
    try:
        result = await iii.trigger_async({"function_id": "quickstart::hello", "payload": {"name": "cron"}})
    except Exception as err:  # the Node worker is still installing, or restarting
        print(f"cron {at}: quickstart::hello not reachable yet ({err})", flush=True)
        return None
    print(f"cron {at}: {result['body']}", flush=True)
    return None


iii.register_function("quickstart::score", score)
iii.register_function("quickstart::tick", tick)
iii.register_trigger(
    {"type": "cron", "function_id": "quickstart::tick", "config": {"expression": "*/10 * * * * *"}}
)

print("python worker ready", flush=True)
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: done.set())
signal.signal(signal.SIGINT, lambda *_: done.set())
done.wait()
iii.shutdown()
