"""Observe worker for engine/compat (observe25_test.go), on iii-sdk 0.25.0.

Connects to III_URL as worker COMPAT_NAME, prints ``P25 {"event":"ready"}``
once the engine's hello was processed, then obeys one JSON command per
stdin line and prints every observation as one ``P25 <json>`` line:

- {"cmd": "register", "id": fn, "mode": "echo"|"record"|"call", "calls": fn2,
   "owner": bool, "args_format": {...}}: a function. "record" prints
   {"event": "invoked", "function_id", "data", "metadata", "depth"} and
   returns {"ok": true}; "echo" returns its input; "call" also calls fn2
   (through the engine) from inside the handler. "owner": delivery owner,
   the added observers kept for "emit" and "obscall".
- {"cmd": "observe", "ref", "source", "target", "options"}: prints
   {"event": "state", "ref", "id", "state", "reason"} on every change, and
   {"event": "ready", "ref", "ok", "code"} once ready() returns or raises.
- {"cmd": "dispose", "ref"}.
- {"cmd": "call", "ref", "fn", "payload", "dispatch"}: prints
   {"event": "result", "ref", "result"} or {"event": "result", "ref", "code"}.
- {"cmd": "emit", "fn", "event"} / {"cmd": "obscall", "ref", "fn", "payload"}:
   through the first observer of owner function fn.
- {"cmd": "trigger", "ref", "type", "fn", "config"}: the deprecated
   register_trigger; prints {"event": "triggered", "ref"}; {"cmd":
   "untrigger", "ref"} unregisters it ({"event": "untriggered", "ref"}). A register
   with "legacy_trigger_type" makes the function stand in for that type
   (the engine's legacy shim); its "added" events carry the observer's
   legacy field.
"""

import json
import os
import sys
import threading
import time

from iii import InitOptions, InvocationError, ObserveHooks, ObserveRejection, current_invocation, register_worker

_out = threading.Lock()


def emit(event):
    with _out:
        sys.stdout.write("P25 " + json.dumps(event) + "\n")
        sys.stdout.flush()


URL = os.environ["III_URL"]
NAME = os.environ.get("COMPAT_NAME", "py25")
iii = register_worker(URL, InitOptions(worker_name=NAME))
handles = {}
owned = {}  # owner function -> its observers, in the order they were added
triggers = {}  # ref -> Trigger of the "trigger" command


def depth():
    ctx = current_invocation()
    return ctx.observe_depth if ctx is not None else 0


def register(cmd):
    fn, mode = cmd["id"], cmd.get("mode", "record")

    def handler(data, metadata=None):
        emit({"event": "invoked", "function_id": fn, "data": data, "metadata": metadata, "depth": depth()})
        if mode == "call":
            iii.trigger({"function_id": cmd["calls"], "payload": {"from": fn}, "dispatch": "remote"})
        if mode == "echo":
            return data
        return {"ok": True}

    hooks = None
    if cmd.get("owner"):
        owned[fn] = []

        def added(obs):
            owned[fn].append(obs)
            emit({"event": "added", "function_id": fn, "id": obs.id, "args": obs.args, "target": obs.target,
                  "legacy": obs.legacy})

        def removed(obs):
            owned[fn] = [o for o in owned[fn] if o.id != obs.id]
            emit({"event": "removed", "function_id": fn, "id": obs.id})

        hooks = ObserveHooks(delivery="owner", args_format=cmd.get("args_format"),
                             legacy_trigger_type=cmd.get("legacy_trigger_type"),
                             on_observer_added=added, on_observer_removed=removed)
    iii.register_function(fn, handler, observe=hooks)
    emit({"event": "registered", "id": fn})


def observe(cmd):
    ref = cmd["ref"]
    h = iii.observe(cmd["source"], cmd["target"], cmd.get("options"))
    handles[ref] = h
    h.on_state_change(lambda state, reason: emit(
        {"event": "state", "ref": ref, "id": h.id, "state": state, "reason": reason}))

    def wait():
        try:
            h.ready(timeout=cmd.get("timeout", 10))
            emit({"event": "ready", "ref": ref, "id": h.id, "ok": True})
        except ObserveRejection as e:
            emit({"event": "ready", "ref": ref, "id": h.id, "ok": False, "code": e.code})
        except TimeoutError:
            emit({"event": "ready", "ref": ref, "id": h.id, "ok": False, "code": "TIMEOUT", "state": h.state})

    threading.Thread(target=wait, daemon=True).start()


def call(cmd):
    def run():
        req = {"function_id": cmd["fn"], "payload": cmd.get("payload")}
        if cmd.get("dispatch"):
            req["dispatch"] = cmd["dispatch"]
        try:
            emit({"event": "result", "ref": cmd["ref"], "result": iii.trigger(req)})
        except InvocationError as e:
            emit({"event": "result", "ref": cmd["ref"], "code": e.code, "message": str(e)})

    threading.Thread(target=run, daemon=True).start()


def obscall(cmd):
    def run():
        obs = owned[cmd["fn"]][0]
        try:
            emit({"event": "result", "ref": cmd["ref"], "result": obs.call(cmd.get("payload"))})
        except InvocationError as e:
            emit({"event": "result", "ref": cmd["ref"], "code": e.code, "message": str(e)})

    threading.Thread(target=run, daemon=True).start()


def main():
    deadline = time.time() + 10
    while str(iii.get_connection_state()).split(".")[-1].lower() != "connected" and time.time() < deadline:
        time.sleep(0.01)
    emit({"event": "ready", "state": str(iii.get_connection_state())})
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        cmd = json.loads(line)
        try:
            c = cmd["cmd"]
            if c == "register":
                register(cmd)
            elif c == "observe":
                observe(cmd)
            elif c == "dispose":
                handles[cmd["ref"]].dispose()
                emit({"event": "disposed", "ref": cmd["ref"]})
            elif c == "call":
                call(cmd)
            elif c == "emit":
                for obs in owned[cmd["fn"]]:
                    obs.emit(cmd["event"])
                emit({"event": "emitted", "fn": cmd["fn"]})
            elif c == "obscall":
                obscall(cmd)
            elif c == "trigger":
                triggers[cmd["ref"]] = iii.register_trigger(
                    {"type": cmd["type"], "function_id": cmd["fn"], "config": cmd.get("config") or {}})
                emit({"event": "triggered", "ref": cmd["ref"]})
            elif c == "untrigger":
                triggers.pop(cmd["ref"]).unregister()
                emit({"event": "untriggered", "ref": cmd["ref"]})
        except Exception as e:  # a test bug: say so and keep going
            emit({"event": "error", "cmd": cmd, "error": repr(e)})
    iii.shutdown()


main()
