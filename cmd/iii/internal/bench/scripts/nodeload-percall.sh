#!/usr/bin/env bash
# Where the time goes per call under the real Node iii-sdk load: for each
# engine in turn (alternating rounds), the CPU and context switches per call
# of the engine and of the two Node processes (echo worker and caller,
# ../shared/peers/node), read from /proc over a window in the middle of the
# run. Diagnostic only; compare.sh is the benchmark.
#
# Usage: nodeload-percall.sh ROUNDS ENGINE...
#   ENGINE: `peer` (PEER, default ~/.cache/iii-peer/bin/iii-v0.22.1) or the
#   path of an iii binary (run as `iii start`).
# Env: CONC (64), MEAS window seconds (4), NODE_DIR (~/.cache/iii-peer/node,
# where compare.sh installs the Node load), PORT (47821).
# Prints one line per run: calls/s, p50/p99, then per call: eng_us,
# worker_us, caller_us (CPU µs) and vol/invol context switches of each.
set -u
R=${1:?usage: nodeload-percall.sh ROUNDS ENGINE...}; shift
ND=${NODE_DIR:-$HOME/.cache/iii-peer/node}
PEER=${PEER:-$HOME/.cache/iii-peer/bin/iii-v0.22.1}
PORT=${PORT:-47821} MEAS=${MEAS:-4} CONC=${CONC:-64}
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
printf 'workers:\n  - name: iii-worker-manager\n    config:\n      host: 127.0.0.1\n      port: %s\n' "$PORT" >"$D/peer.yaml"
printf 'engine:\n  host: 127.0.0.1\n  port: %s\nmodules: []\n' "$PORT" >"$D/ours.yaml"
# voluntary and involuntary context switches over all threads of a process
switches() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^voluntary/{v+=$2} /^nonvoluntary/{n+=$2} END{print v, n}'; }
ticks() { awk '{print $14+$15}' /proc/"$1"/stat; }
per() { echo "scale=${3:-2}; ($1)/$2" | bc; }
for r in $(seq "$R"); do
  for k in "$@"; do
    if [ "$k" = peer ]; then
      (cd "$D" && III_TELEMETRY_ENABLED=false exec setsid "$PEER" --config "$D/peer.yaml" --no-update-check) >"$D/eng.log" 2>&1 &
    else
      bin=$(readlink -f "$k")
      (cd "$D" && III_TOKEN= exec setsid "$bin" start --config "$D/ours.yaml") >"$D/eng.log" 2>&1 &
    fi
    P=$!; sleep 1.5
    III_URL=ws://127.0.0.1:$PORT node "$ND/worker.mjs" >/dev/null 2>&1 & W=$!
    sleep 0.7
    III_URL=ws://127.0.0.1:$PORT CONC=$CONC DURATION_S=$((MEAS + 3)) WARMUP_S=1 node "$ND/caller.mjs" >"$D/out" 2>/dev/null & C=$!
    sleep 2.5 # connected and warmed up
    read -r ev0 ei0 < <(switches $P); read -r wv0 wi0 < <(switches $W); read -r cv0 ci0 < <(switches $C)
    e0=$(ticks $P); w0=$(ticks $W); c0=$(ticks $C)
    sleep "$MEAS"
    read -r ev1 ei1 < <(switches $P); read -r wv1 wi1 < <(switches $W); read -r cv1 ci1 < <(switches $C)
    e1=$(ticks $P); w1=$(ticks $W); c1=$(ticks $C)
    wait $C; kill $W $P; wait $P $W 2>/dev/null
    out=$(tail -n1 "$D/out"); cps=$(echo "$out" | jq .calls_per_sec)
    n=$(echo "$cps * $MEAS" | bc) # calls in the window
    hz=$(getconf CLK_TCK)
    echo "$(basename "$k") r$r calls/s=$cps p50=$(echo "$out" | jq .p50_ms) p99=$(echo "$out" | jq .p99_ms)" \
      "eng_us=$(per "($e1-$e0)*1000000/$hz" "$n" 1) worker_us=$(per "($w1-$w0)*1000000/$hz" "$n" 1) caller_us=$(per "($c1-$c0)*1000000/$hz" "$n" 1)" \
      "eng_cs=$(per "$ev1-$ev0" "$n")/$(per "$ei1-$ei0" "$n") worker_cs=$(per "$wv1-$wv0" "$n")/$(per "$wi1-$wi0" "$n") caller_cs=$(per "$cv1-$cv0" "$n")/$(per "$ci1-$ci0" "$n")"
  done
done
