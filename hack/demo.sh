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
  KEDGE_ADMIN__ADDRESS="$admin" nohup "$BIN/$b" "${@:3}" >"$RUN/$b.log" 2>&1 &
  echo $! >"$RUN/$b.pid"
  for _ in $(seq 200); do
    if curl -fsS "http://$admin/readyz" >/dev/null 2>&1; then step "$b is ready"; return; fi
    kill -0 "$(cat "$RUN/$b.pid")" 2>/dev/null || { cat "$RUN/$b.log"; echo "$b exited" >&2; exit 1; }
    sleep 0.1
  done
  cat "$RUN/$b.log"; echo "$b not ready in 20s" >&2; exit 1
}

KEDGE_STORE__PATH="$PWD/$RUN/cloudcore.db" KEDGE_ADMIN__SOCKET="$PWD/$RUN/cloudcore.sock" KEDGE_MODULES__CLOUDHUB__PKIDIR="$PWD/$RUN/pki" \
  KEDGE_MODULES__CLOUDHUB__ADDRESS=127.0.0.1:10000 KEDGE_MODULES__CLOUDHUB__CERTSERVERADDRESS=127.0.0.1:10002 \
  start cloudcore 127.0.0.1:10006

step "creating a join token (cloudcore token create)"
token=$("$BIN/cloudcore" token create --pki-dir "$PWD/$RUN/pki")
echo "    ${token:0:24}... (CA hash . signed JWT, expires in 24h)"
step "joining the edge node (edgecore join): checks the CA hash, gets a certificate, writes edgecore.yaml"
"$BIN/edgecore" join --cloudcore-address 127.0.0.1 --token "$token" --node-name demo-edge \
  --data-dir "$PWD/$RUN/edge" --config-out "$PWD/$RUN/edgecore.yaml" --force | sed 's/^/    /'

KEDGE_ADMIN__SOCKET="$PWD/$RUN/edgecore.sock" start edgecore 127.0.0.1:10360 --config "$PWD/$RUN/edgecore.yaml" --set modules.nodestatus.interval=2s

step "waiting for the node to connect over mTLS and report its status (nodestatus -> metamanager -> SQLite -> outbox -> edgehub -> cloudhub)"
for _ in $(seq 100); do
  n=$(curl -fsS http://127.0.0.1:10006/metrics | awk '/^kedge_cloudhub_upstream_total/ {s+=$2} END {print s+0}')
  [[ ${n:-0} -ge 2 ]] && break
  sleep 0.2
done

step "cloudcore: connected nodes and what arrived from them"
curl -fsS http://127.0.0.1:10006/metrics | grep -E '^kedge_cloudhub_(connected_nodes|connects_total|upstream_total)' | sed 's/^/    /'
echo "    (result=\"no_handler\": the node status reached cloudhub; the edgecontroller that writes it into"
echo "     Kubernetes arrives with the Kubernetes work, so cloudhub answers that nobody handles it yet)"
step "edgecore: the link, the outbox and the modules"
curl -fsS http://127.0.0.1:10360/metrics | grep -E '^kedge_(edgehub_connected|edgehub_upstream_(sent|acked)_total|edgehub_outbox_depth|nodestatus_reports_total)' | sed 's/^/    /'
KEDGE_ADMIN__SOCKET="$PWD/$RUN/edgecore.sock" "$BIN/edgecore" module ls | sed 's/^/    /'
step "what the edge stored (edgecore inspect):"
"$BIN/edgecore" inspect --config "$PWD/$RUN/edgecore.yaml" --type nodestatus | sed 's/^/    /'

cat <<TXT

Kedge is running: cloudcore (admin http://127.0.0.1:10006) and edgecore (admin http://127.0.0.1:10360),
state in $RUN/. Try:

  curl -s 127.0.0.1:10360/metrics | grep kedge_          # edge: link, outbox, router, modules
  curl -s 127.0.0.1:10006/metrics | grep kedge_cloudhub   # cloud: nodes, queues, acks
  $BIN/edgecore inspect --config $RUN/edgecore.yaml --values        # the edge's store
  KEDGE_ADMIN__SOCKET=$PWD/$RUN/edgecore.sock $BIN/edgecore module ls
  KEDGE_ADMIN__SOCKET=$PWD/$RUN/edgecore.sock $BIN/edgecore module swap nodestatus --runtime builtin
  \$EDITOR $RUN/edgecore.yaml      # e.g. modules.nodestatus.interval: 5s — saved, it is hot-swapped
  kill -STOP \$(cat $RUN/cloudcore.pid); sleep 20; kill -CONT \$(cat $RUN/cloudcore.pid)   # the edge
                                  # notices in two heartbeats, queues in its outbox, redials with jitter
  $BIN/edgecore --defaultconfig | less                    # every setting, documented
  tail -f $RUN/edgecore.log $RUN/cloudcore.log
  make demo-stop                                           # stop both

Kubernetes (kubectl), pods and devices join this demo as their issues land.
TXT
