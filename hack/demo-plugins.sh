#!/usr/bin/env bash
# The plugin framework part of `make demo`, also run by test/e2e (TestDemoPluginSteps...) so it cannot
# rot. Three commands, all taking the folder OUT where they keep what they build and run:
#
#   hack/demo-plugins.sh prepare OUT   build the pieces (once per run): the modbus mapper as a process
#       plugin twice (make module-modbus, versions 1.0.0 and 2.0.0), the thermocodec WASM codec v1
#       (Celsius) and v2 (Kelvin) (make wasm), the libmodbus server (gcc), the T-100 simulator
#       (hack/t100sim), the plugin-registry CLI, a registry signing key and an empty registry folder.
#       The caller then starts cloudcore with modules.cloudhub.registryDir=OUT/registry and the
#       rolloutcontroller and joins the edge with `edgecore join --registry-key OUT/regkey/registry.pub`.
#   hack/demo-plugins.sh configure OUT CONFIG   add to join's edgecore.yaml the mapper as a sha256-pinned
#       process plugin and the codec as sha256-pinned WASM v1; start edgecore with the --set flags in
#       OUT/edgecore.args (DMI socket, WASM cache, pluginmanager timings).
#   hack/demo-plugins.sh run OUT       the steps, printing what each proves; exits non-zero if one fails.
#       Needs KUBECTL, EDGECORE (the binary), EDGE_SOCKET (its control socket), MQTT_PORT (its broker),
#       NODE; NS (default: default).
#   hack/demo-plugins.sh stop OUT      stop the device and the MQTT subscriber run started.
set -euo pipefail
cd "$(dirname "$0")/.."

cmd=${1:-}; OUT=${2:-}
[[ -n $cmd && -n $OUT ]] || { echo "usage: hack/demo-plugins.sh prepare|configure|run|stop OUT" >&2; exit 2; }
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
step() { printf '==> %s\n' "$*"; }
say() { sed 's/^/    /'; }
sum() { sha256sum "$1" | cut -d' ' -f1; }

stop_pids() {
  for p in "$OUT"/*.pid; do
    [[ -f $p ]] || continue
    pid=$(cat "$p")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$p"
  done
}

case $cmd in
configure) # OUT CONFIG: add the mapper's and the codec's blocks under modules: of edgecore join's config
  cfg=${3:?usage: hack/demo-plugins.sh configure OUT CONFIG}
  grep -q '^modules:$' "$cfg" || { echo "$cfg: no top-level modules: section (written by edgecore join?)" >&2; exit 1; }
  ! grep -qE '^  (modbus|thermo-codec):' "$cfg" || { echo "$cfg already configures modbus or thermo-codec" >&2; exit 1; }
  sed -i "/^modules:\$/r $OUT/modules.yaml" "$cfg"
  exit 0
  ;;
stop)
  stop_pids
  exit 0
  ;;
prepare)
  GO=${GO:-go}
  if [[ ! -f /usr/include/modbus/modbus.h ]] || ! command -v gcc >/dev/null; then
    sudo=(); [[ $(id -u) -ne 0 ]] && sudo=(sudo)
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends gcc libc6-dev libmodbus-dev >/dev/null 2>&1 ||
      { "${sudo[@]}" apt-get update -qq && "${sudo[@]}" apt-get install -y -qq --no-install-recommends gcc libc6-dev libmodbus-dev >/dev/null; }
  fi
  for v in 1.0.0 2.0.0; do # cmd/kedge-module with the modbus module, as `make module-modbus` builds it
    make -s --no-print-directory module-modbus BIN="$OUT/mapper-$v" VERSION="$v" GO="$GO" >/dev/null
  done
  make -s --no-print-directory wasm BIN="$OUT" GO="$GO" >/dev/null # thermocodec.wasm and thermocodec-v2.wasm
  gcc -O2 -Wall -I/usr/include/modbus -o "$OUT/mbserver" plugins/mappers/modbus/testdata/server.c -lmodbus
  "$GO" build -trimpath -o "$OUT/" ./hack/t100sim ./plugin-registry/cmd/plugin-registry
  rm -rf "$OUT/regkey" "$OUT/registry" && mkdir -p "$OUT/registry"
  "$OUT/plugin-registry" keygen --out "$OUT/regkey" >/dev/null
  m1="$OUT/mapper-1.0.0/modules/modbus" c1="$OUT/wasm/thermocodec.wasm"
  mkdir -p "$OUT/mappers"
  # The mapper's and the codec's blocks go into the config file (configure): set with --set or KEDGE_
  # variables, a process plugin is handed the host's keys (enable) as its own settings and refuses them.
  cat >"$OUT/modules.yaml" <<YAML
  modbus:
    enable: true
    runtime: process
    path: $m1
    sha256: $(sum "$m1")
    dmiSocket: $OUT/dmi.sock
    socket: $OUT/mappers/modbus.sock
    healthCycle: 1s
    backoffMin: 100ms
    backoffMax: 1s
  thermo-codec:
    enable: true
    runtime: wasm
    path: $c1
    sha256: $(sum "$c1")
YAML
  cat >"$OUT/edgecore.args" <<ARGS
--set=plugins.cacheDir=$OUT/wasm-cache
--set=modules.dmi.socket=$OUT/dmi.sock
--set=modules.pluginmanager.healthTimeout=20s
--set=modules.pluginmanager.healthStable=2s
ARGS
  exit 0
  ;;
run) ;;
*) echo "usage: hack/demo-plugins.sh prepare|configure|run|stop OUT" >&2; exit 2 ;;
esac

: "${KUBECTL:?}" "${EDGECORE:?}" "${EDGE_SOCKET:?}" "${MQTT_PORT:?}" "${NODE:?}"
NS=${NS:-default}
DEVICE=modbus-t100-1
DOCS="$OUT/documents.txt" SERVED="$OUT/served.txt"
module() { "$EDGECORE" module "$@" --socket "$EDGE_SOCKET"; }
nreadings() { grep -c '"temperature"' "$DOCS" 2>/dev/null || true; }
waitreadings() { # n what
  for _ in $(seq 600); do [[ $(nreadings) -ge $1 ]] && return; sleep 0.1; done
  echo "fewer than $1 readings reached the twin within 60s ($2): $(nreadings); edgecore module ls:" >&2
  module ls >&2; exit 1
}
stop_pids

step "a Modbus TCP device: the libmodbus server (gcc + Debian's libmodbus) fronted by a T-100 thermometer simulator (hack/t100sim) that serves a new count on every read"
"$OUT/mbserver" 0 >"$OUT/mbserver.out" 2>"$OUT/mbserver.log" &
echo $! >"$OUT/mbserver.pid"
for _ in $(seq 100); do grep -q LISTENING "$OUT/mbserver.out" && break; sleep 0.1; done
mbport=$(awk '/LISTENING/ {print $2}' "$OUT/mbserver.out")
[[ -n $mbport ]] || { echo "the libmodbus server did not start: $(cat "$OUT/mbserver.log")" >&2; exit 1; }
"$OUT/t100sim" serve -modbus "127.0.0.1:$mbport" -listen 127.0.0.1:0 -served "$SERVED" >"$OUT/t100sim.out" 2>"$OUT/t100sim.log" &
echo $! >"$OUT/t100sim.pid"
for _ in $(seq 100); do grep -q LISTENING "$OUT/t100sim.out" && break; sleep 0.1; done
devaddr=$(awk '/LISTENING/ {print $2}' "$OUT/t100sim.out")
[[ -n $devaddr ]] || { echo "the T-100 simulator did not start: $(cat "$OUT/t100sim.log")" >&2; exit 1; }
echo "    libmodbus server on 127.0.0.1:$mbport, the T-100 on $devaddr (holding registers 30-32: count, check word)"

step "the modbus mapper runs as a process plugin (cmd/kedge-module, pinned by sha256), the codec as WASM (thermocodec v1, Celsius)"
for _ in $(seq 300); do module ls 2>/dev/null | grep -q '^modbus .*process' && break; sleep 0.1; done
module ls | grep -E '^(NAME|modbus|thermo-codec) ' | say
bad=$(printf '%064d' 0)
echo "    swapping in the same mapper with a wrong sha256 is refused, nothing changes:"
module swap modbus --runtime process --path "$OUT/mapper-1.0.0/modules/modbus" --sha256 "$bad" 2>&1 | grep -io 'sha256.*' | cut -c1-110 | say || true

step "a T-100 Device on $NODE (examples/devices/modbus-t100-*.yaml): polled every 100 ms by the mapper, registers decoded by the WASM codec"
mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -v -t "\$hw/events/device/$DEVICE/twin/update/document" >"$DOCS" 2>"$OUT/mqtt.log" &
echo $! >"$OUT/mqtt.pid"
sleep 0.3 # subscribed before the device reports
"$KUBECTL" apply -n "$NS" -f examples/devices/modbus-t100-model.yaml >/dev/null
sed -e "s/nodeName: edge-1/nodeName: $NODE/" -e "s/address: \"127.0.0.1:1502\"/address: \"$devaddr\"/" -e 's/timeout: 500ms/timeout: 5s/' \
  examples/devices/modbus-t100-device.yaml | "$KUBECTL" apply -n "$NS" -f - >/dev/null
waitreadings 20 "WASM codec v1"
echo "    $(nreadings) readings so far; the last: $(tail -1 "$DOCS" | grep -o '"actual":{"value":"[^"]*"' | tail -1 | cut -d'"' -f6) °C (count × 0.1)"
for _ in $(seq 100); do "$KUBECTL" get device -n "$NS" "$DEVICE" -o jsonpath='{.status.twins[0].reported.value}' 2>/dev/null | grep -q . && break; sleep 0.2; done
echo "    kubectl get device $DEVICE: temperature reported $("$KUBECTL" get device -n "$NS" "$DEVICE" -o jsonpath='{.status.twins[0].reported.value}')"

step "hot swap of the codec WASM v1 -> v2 (Kelvin) while the device is polled (edgecore module swap)"
c2="$OUT/wasm/thermocodec-v2.wasm"
module swap thermo-codec --runtime wasm --path "$c2" --sha256 "$(sum "$c2")" | sed -n 1p | say
n=$(nreadings)
waitreadings $((n + 20)) "WASM codec v2"
module ls | grep -E '^thermo-codec ' | say
"$OUT/t100sim" check -served "$SERVED" -documents "$DOCS" | say
echo "    every count the device served reached the twin once and in order across the swap"

step "a PluginRollout of mapper 2.0.0 from the signed plugin registry (plugin-registry publish + sign; cloudcore serves it; pluginmanager verifies it)"
m2="$OUT/mapper-2.0.0/modules/modbus"
"$OUT/plugin-registry" publish --dir "$OUT/registry" --name modbus --version 2.0.0 --kind mapper --runtime process "$m2" | say
"$OUT/plugin-registry" sign --dir "$OUT/registry" --key "$OUT/regkey/registry.key" --expires 24h | say
"$KUBECTL" label node "$NODE" kedge.io/demo-rollout=true --overwrite >/dev/null
n=$(nreadings)
"$KUBECTL" apply -f - >/dev/null <<YAML
apiVersion: kedge.io/v1alpha1
kind: PluginRollout
metadata: {name: modbus-mapper, namespace: $NS}
spec:
  plugin: modbus
  version: 2.0.0
  runtime: process
  module: modbus
  nodeSelector: {matchLabels: {kedge.io/demo-rollout: "true"}}
  maxParallel: 1
YAML
for _ in $(seq 900); do
  phase=$("$KUBECTL" get pluginrollout -n "$NS" modbus-mapper -o jsonpath='{.status.phase}' 2>/dev/null || true)
  [[ $phase == Complete || $phase == Paused ]] && break
  sleep 0.2
done
"$KUBECTL" get pluginrollouts -n "$NS" | say
[[ $phase == Complete ]] || { "$KUBECTL" get pluginrollout -n "$NS" modbus-mapper -o yaml >&2; echo "the rollout did not complete: phase $phase" >&2; exit 1; }
module ls | grep -E '^modbus ' | say
echo "    mapper 2.0.0 is sha256:$(sum "$m2" | cut -c1-12): downloaded, checked against the signed index and swapped in by pluginmanager"
waitreadings $((n + 20)) "mapper 2.0.0"
"$OUT/t100sim" check -served "$SERVED" -documents "$DOCS" | tail -1 | sed 's/$/ (the whole run: codec swap and mapper rollout)/' | say
