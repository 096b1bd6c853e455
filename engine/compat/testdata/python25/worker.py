"""Compat worker for the Python iii-sdk 0.25 (engine/compat, python25_test.go).

Environment: III_URL, COMPAT_PREFIX (p), COMPAT_NAME (worker name),
COMPAT_NAMESPACE (optional worker namespace), COMPAT_FUNCTIONS (optional,
comma-separated extra function ids), COMPAT_RECONNECT_MS,
COMPAT_TRIGGER_TYPE (optional: the worker provides a trigger type of that
id, in its namespace, and prints ``trigger_registered`` /
``trigger_unregistered`` events with what its handler was given).

Registers p::echo (answers {data, caller, by}), p::relay (calls
data.function_id in data.namespace with data.payload from inside its
handler and answers what it got) and p::big (answers a string of
data.size "x", or echoes data.payload's length), then prints
``COMPAT {"event":"ready"}`` and obeys one JSON command per stdin line
(``call``, ``bind`` (register_trigger), ``fire`` (call the function of a
trigger the worker provides, in the namespace it was given), ``exit``),
printing every observation as ``COMPAT <json>``.
Registration rejections are printed as ``rejected`` events.
"""

import json
import logging
import os
import sys
import threading

from iii import (
    InitOptions,
    InvocationError,
    RegistrationRejectedError,
    current_invocation,
    register_worker,
)
from iii.triggers import TriggerHandler
from iii_helpers.observability import ReconnectionConfig

_out = threading.Lock()


def emit(event):
    line = "COMPAT " + json.dumps(event)
    with _out:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


URL = os.environ["III_URL"]
PREFIX = os.environ["COMPAT_PREFIX"]
NAME = os.environ.get("COMPAT_NAME") or PREFIX
NS = os.environ.get("COMPAT_NAMESPACE") or None
RECONNECT_MS = int(os.environ.get("COMPAT_RECONNECT_MS") or 0)


class Rejections(logging.Handler):
    """The SDK reports registrationrejected in its log only."""

    def emit(self, record):
        msg = record.getMessage()
        if "registration rejected" in msg:
            emit({"event": "rejected", "message": msg})


logging.getLogger("iii").addHandler(Rejections())

options = InitOptions(worker_name=NAME, namespace=NS)
if RECONNECT_MS > 0:
    options.reconnection_config = ReconnectionConfig(initial_delay_ms=RECONNECT_MS, max_delay_ms=RECONNECT_MS * 4)
worker = register_worker(URL, options)


def caller():
    inv = current_invocation()
    return inv.caller if inv else None


def echo(data):
    return {"data": data, "caller": caller(), "by": NAME}


def relay(data):
    req = {"function_id": data["function_id"], "payload": data.get("payload"), "timeout_ms": 10000}
    if data.get("namespace"):
        req["namespace"] = data["namespace"]
    return {"got": worker.trigger(req), "caller": caller(), "by": NAME}


def big(data):
    if isinstance(data, dict) and "size" in data:
        return "x" * int(data["size"])
    return {"length": len(data["payload"]), "by": NAME}


worker.register_function(f"{PREFIX}::echo", echo)
worker.register_function(f"{PREFIX}::relay", relay)
worker.register_function(f"{PREFIX}::big", big)
for fid in filter(None, (os.environ.get("COMPAT_FUNCTIONS") or "").split(",")):
    worker.register_function(fid, lambda data, fid=fid: {"function_id": fid, "by": NAME})


bindings = {}  # trigger id -> TriggerConfig, of the type this worker provides


class Provider(TriggerHandler):
    async def register_trigger(self, config):
        bindings[config.id] = config
        emit({"event": "trigger_registered", "trigger_id": config.id, "function_id": config.function_id,
              "namespace": config.namespace, "config": config.config})

    async def unregister_trigger(self, config):
        bindings.pop(config.id, None)
        emit({"event": "trigger_unregistered", "trigger_id": config.id})


TRIGGER_TYPE = os.environ.get("COMPAT_TRIGGER_TYPE")
if TRIGGER_TYPE:
    worker.register_trigger_type({"id": TRIGGER_TYPE, "description": f"{TRIGGER_TYPE} by {NAME}"}, Provider())


def bind(cmd):
    trig = {"type": cmd["trigger_type"], "function_id": cmd["function_id"], "config": cmd.get("config") or {}}
    if cmd.get("trigger_namespace"):
        trig["trigger_namespace"] = cmd["trigger_namespace"]
    worker.register_trigger(trig)
    emit({"event": "sent", "ref": cmd["ref"]})


def fire(cmd):
    config = bindings[cmd["trigger_id"]]
    req = {"function_id": config.function_id, "payload": {"fired_by": NAME}, "timeout_ms": 10000}
    if config.namespace:
        req["namespace"] = config.namespace
    emit({"event": "fired", "ref": cmd["ref"], "result": worker.trigger(req)})


def call(cmd):
    req = {"function_id": cmd["function_id"], "payload": cmd.get("payload"), "timeout_ms": cmd.get("timeout_ms") or 20000}
    if cmd.get("namespace"):
        req["namespace"] = cmd["namespace"]
    if cmd.get("size"):
        req["payload"] = {"payload": "y" * int(cmd["size"])}
    try:
        result = worker.trigger(req)
        if isinstance(result, str) and len(result) > 1024:
            result = {"string_length": len(result)}
        emit({"event": "result", "id": cmd["id"], "result": result})
    except InvocationError as err:
        emit({"event": "error", "id": cmd["id"], "code": err.code, "message": err.message})
    except RegistrationRejectedError as err:
        emit({"event": "error", "id": cmd["id"], "code": err.code, "message": str(err)})


def run(cmd):
    try:
        if cmd.get("op") == "call":
            call(cmd)
        elif cmd.get("op") == "bind":
            bind(cmd)
        elif cmd.get("op") == "fire":
            fire(cmd)
        else:
            emit({"event": "bad_command", "op": cmd.get("op")})
    except Exception as err:  # report, keep serving
        emit({"event": "command_failed", "op": cmd.get("op"), "error": repr(err)})


def main():
    emit({"event": "ready", "name": NAME, "runtime": "python"})
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        cmd = json.loads(line)
        if cmd.get("op") == "exit":
            break
        threading.Thread(target=run, args=(cmd,), daemon=True).start()
    try:
        worker.shutdown()
    finally:
        os._exit(0)


if __name__ == "__main__":
    main()
