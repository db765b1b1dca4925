#!/usr/bin/env bash
# make demo: start cloudcore and edgecore on this machine with their built-in defaults (state under
# _run/demo), show them working, and print what to try. `hack/demo.sh stop` stops them.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=_run/demo
BIN=_bin
mkdir -p "$RUN"

step() { printf '==> %s\n' "$*"; }

stop() {
  for b in edgecore cloudcore; do
    if [[ -f $RUN/$b.pid ]] && kill -0 "$(cat "$RUN/$b.pid")" 2>/dev/null; then
      step "stopping $b (SIGTERM)"
      kill -TERM "$(cat "$RUN/$b.pid")"
      for _ in $(seq 100); do kill -0 "$(cat "$RUN/$b.pid")" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$RUN/$b.pid"
  done
}

if [[ ${1:-} == stop ]]; then stop; exit 0; fi
stop # a previous demo

start() { # binary admin-address
  local b=$1 admin=$2
  step "starting $b (log: $RUN/$b.log, admin: http://$admin)"
  KEDGE_STORE__PATH="$PWD/$RUN/$b.db" KEDGE_ADMIN__ADDRESS="$admin" \
    nohup "$BIN/$b" "${@:3}" >"$RUN/$b.log" 2>&1 &
  echo $! >"$RUN/$b.pid"
  for _ in $(seq 200); do
    if curl -fsS "http://$admin/readyz" >/dev/null 2>&1; then step "$b is ready"; return; fi
    kill -0 "$(cat "$RUN/$b.pid")" 2>/dev/null || { cat "$RUN/$b.log"; echo "$b exited" >&2; exit 1; }
    sleep 0.1
  done
  cat "$RUN/$b.log"; echo "$b not ready in 20s" >&2; exit 1
}

start cloudcore 127.0.0.1:10006
start edgecore 127.0.0.1:10360 --set node.name=demo-edge --set modules.nodestatus.interval=2s

step "waiting for the edge node to report its status twice (nodestatus -> router -> metamanager -> SQLite)"
for _ in $(seq 100); do
  n=$(curl -fsS http://127.0.0.1:10360/metrics | awk '/^kedge_nodestatus_reports_total/ {print $2}')
  [[ ${n:-0} -ge 2 ]] && break
  sleep 0.2
done

step "edgecore metrics (router and modules):"
curl -fsS http://127.0.0.1:10360/metrics | grep -E '^kedge_(router_delivered_total|module_handled_total|nodestatus_reports_total|module_up)' | sed 's/^/    /'
step "what the edge stored (edgecore inspect):"
KEDGE_STORE__PATH="$PWD/$RUN/edgecore.db" "$BIN/edgecore" inspect --type nodestatus --values | sed 's/^/    /'

cat <<TXT

Kedge is running: cloudcore (admin http://127.0.0.1:10006) and edgecore (admin http://127.0.0.1:10360),
state in $RUN/. Try:

  curl -s 127.0.0.1:10360/metrics | grep kedge_           # router, modules, node status metrics
  KEDGE_STORE__PATH=$PWD/$RUN/edgecore.db $BIN/edgecore inspect --values   # the edge's store
  $BIN/edgecore --defaultconfig | less                     # every setting, documented
  $BIN/edgecore validate --set modules.nodestatus.interval=soon   # a config error, exit code 2
  tail -f $RUN/edgecore.log
  make demo-stop                                            # stop both

The cloud-edge hub, Kubernetes (kubectl), pods and devices join this demo as their issues land.
TXT
