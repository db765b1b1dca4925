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

if [[ ${1:-} == stop ]]; then
  ./hack/demo-plugins.sh stop "$RUN/plugins"
  stop
  CONTROLPLANE_DIR="$PWD/$RUN/controlplane" ./hack/controlplane.sh down
  CONTAINERD_DIR="$PWD/$RUN/containerd" ./hack/containerd.sh down
  exit 0
fi
./hack/demo-plugins.sh stop "$RUN/plugins" 2>/dev/null || true
stop # a previous demo, and its state: every run starts fresh
CONTROLPLANE_DIR="$PWD/$RUN/controlplane" ./hack/controlplane.sh down >/dev/null 2>&1 || true
CONTAINERD_DIR="$PWD/$RUN/containerd" ./hack/containerd.sh down >/dev/null 2>&1 || true
umount -R "$RUN/containerd" 2>/dev/null || true
rm -rf "$RUN" && mkdir -p "$RUN"

step "a real container runtime: containerd + runc + CNI (from Debian when missing), images built locally"
export CONTAINERD_DIR="$PWD/$RUN/containerd"
./hack/containerd.sh up 2>&1 | sed 's/^/    /'
CRI="unix://$CONTAINERD_DIR/containerd.sock"

step "the Device and DeviceModel CRDs (devices.kubeedge.io/v1beta1) and an MQTT client (mosquitto-clients)"
if ! command -v mosquitto_pub >/dev/null; then
  sudo=(); [[ $(id -u) -ne 0 ]] && sudo=(sudo)
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends mosquitto-clients >/dev/null 2>&1 ||
    { "${sudo[@]}" apt-get update -qq && "${sudo[@]}" apt-get install -y -qq --no-install-recommends mosquitto-clients >/dev/null; }
fi

step "a real Kubernetes control plane (etcd + kube-apiserver v1.36.3) on 127.0.0.1:6443"
export CONTROLPLANE_DIR="$PWD/$RUN/controlplane"
./hack/controlplane.sh up 2>&1 | sed 's/^/    /'
eval "$(./hack/controlplane.sh env)"
ln -sf "$(./hack/controlplane.sh bindir)/kubectl" "$BIN/kubectl" # kubectl v1.36.3, matching the API server
KUBECTL="$BIN/kubectl"
"$KUBECTL" apply -f build/crds/ >/dev/null # devicecontroller watches Devices and DeviceModels
"$KUBECTL" wait --for condition=Established crd/devices.devices.kubeedge.io crd/devicemodels.devices.kubeedge.io >/dev/null

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

step "the plugin pieces: the modbus mapper as a process plugin (make module-modbus, 1.0.0 and 2.0.0), the thermocodec WASM codec v1 and v2 (make wasm), a registry signing key (hack/demo-plugins.sh prepare)"
./hack/demo-plugins.sh prepare "$RUN/plugins"

KEDGE_MODULES__CLOUDHUB__REGISTRYDIR="$PWD/$RUN/plugins/registry" \
  KEDGE_MODULES__ROLLOUTCONTROLLER__ENABLE=true KEDGE_MODULES__ROLLOUTCONTROLLER__KUBECONFIG="$KUBECONFIG" \
  KEDGE_STORE__PATH="$PWD/$RUN/cloudcore.db" KEDGE_ADMIN__SOCKET="$PWD/$RUN/cloudcore.sock" KEDGE_MODULES__CLOUDHUB__PKIDIR="$PWD/$RUN/pki" \
  KEDGE_MODULES__CLOUDHUB__ADDRESS=127.0.0.1:10000 KEDGE_MODULES__CLOUDHUB__CERTSERVERADDRESS=127.0.0.1:10002 \
  KEDGE_MODULES__EDGECONTROLLER__ENABLE=true KEDGE_MODULES__EDGECONTROLLER__KUBECONFIG="$KUBECONFIG" \
  KEDGE_MODULES__DEVICECONTROLLER__ENABLE=true KEDGE_MODULES__DEVICECONTROLLER__KUBECONFIG="$KUBECONFIG" \
  KEDGE_MODULES__CLOUDSTREAM__ENABLE=true KEDGE_MODULES__CLOUDSTREAM__KUBECONFIG="$KUBECONFIG" \
  KEDGE_MODULES__CLOUDSTREAM__PKIDIR="$PWD/$RUN/pki" KEDGE_MODULES__CLOUDSTREAM__ADVERTISEADDRESS=127.0.0.1 \
  KEDGE_MODULES__CLOUDSTREAM__STREAMADDRESS=127.0.0.1:10003 KEDGE_MODULES__CLOUDSTREAM__TUNNELADDRESS=127.0.0.1:10004 \
  KEDGE_MODULES__CLOUDSTREAM__CLIENTCAFILE="$CONTROLPLANE_DIR/pki/ca.crt" \
  KEDGE_MODULES__CLOUDSTREAM__CLIENTALLOWEDNAMES=kube-apiserver-kubelet-client \
  KEDGE_MODULES__CLOUDSTREAM__METRICSAPI__ENABLE=true KEDGE_MODULES__CLOUDSTREAM__METRICSAPI__ADDRESS=127.0.0.1:10007 \
  KEDGE_MODULES__CLOUDSTREAM__METRICSAPI__SCRAPEINTERVAL=3s \
  KEDGE_MODULES__CONSOLE__ENABLE=true KEDGE_MODULES__CONSOLE__KUBECONFIG="$KUBECONFIG" \
  KEDGE_MODULES__CONSOLE__ADDRESS=127.0.0.1:10008 KEDGE_MODULES__CONSOLE__PKIDIR="$PWD/$RUN/pki" \
  start cloudcore 127.0.0.1:10006

step "creating a join token for node demo-edge (cloudcore token create --node demo-edge: one join, 24 h)"
token=$("$BIN/cloudcore" token create --pki-dir "$PWD/$RUN/pki" --node demo-edge 2>/dev/null)
echo "    ${token:0:24}... (CA hash . signed JWT carrying the token's ID; 'cloudcore token ls' lists it)"
step "joining the edge node (edgecore join): checks the CA hash, gets a certificate, writes edgecore.yaml"
"$BIN/edgecore" join --cloudcore-address 127.0.0.1 --token "$token" --node-name demo-edge \
  --data-dir "$PWD/$RUN/edge" --config-out "$PWD/$RUN/edgecore.yaml" --stream-port 10004 --force \
  --registry-key "$PWD/$RUN/plugins/regkey/registry.pub" | sed 's/^/    /'
echo "    the same token again is refused (single use; demo-edge holds a valid certificate):"
"$BIN/edgecore" join --cloudcore-address 127.0.0.1 --token "$token" --node-name demo-edge \
  --data-dir "$PWD/$RUN/again" --config-out "$PWD/$RUN/again.yaml" 2>&1 | grep -o 'refused: .*' | cut -c1-110 | sed 's/^/    /' || true

./hack/demo-plugins.sh configure "$RUN/plugins" "$PWD/$RUN/edgecore.yaml"
mapfile -t PLUGIN_ARGS <"$RUN/plugins/edgecore.args"

# edged runs the pods on that containerd (CRI); its pod folders live under the demo's state.
KEDGE_ADMIN__SOCKET="$PWD/$RUN/edgecore.sock" KEDGE_MODULES__PLUGINMANAGER__CONTROLSOCKET="$PWD/$RUN/edgecore.sock" KEDGE_MODULES__EDGED__ENABLE=true KEDGE_MODULES__EDGED__CRIENDPOINT="$CRI" \
  KEDGE_MODULES__EDGESTREAM__CRIENDPOINT="$CRI" \
  KEDGE_MODULES__EDGED__ROOTDIR="$PWD/$RUN/edged" KEDGE_MODULES__NODESTATUS__CRIENDPOINT="$CRI" \
  KEDGE_MODULES__NODESTATUS__STORAGEPATH="$PWD/$RUN" \
  start edgecore 127.0.0.1:10360 --config "$PWD/$RUN/edgecore.yaml" --set modules.nodestatus.interval=2s "${PLUGIN_ARGS[@]}"

step "waiting for the node to register in Kubernetes and turn Ready (nodestatus -> SQLite -> outbox -> edgehub -> cloudhub -> edgecontroller)"
for _ in $(seq 150); do
  "$KUBECTL" get node demo-edge -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -q True && break
  sleep 0.2
done
"$KUBECTL" get nodes -o wide | sed 's/^/    /'
# Autonomy: the node's pods tolerate it being unreachable without limit (edgecontroller README), so the
# demo keeps running through any outage instead of being evicted 5 minutes into it.
"$KUBECTL" label node demo-edge kedge.io/autonomy=true --overwrite >/dev/null

step "a Deployment pinned to the edge node: busybox httpd serving a ConfigMap, run by edged on containerd"
"$KUBECTL" apply -f - >/dev/null <<'YAML'
apiVersion: v1
kind: ConfigMap
metadata: {name: demo-config, namespace: default}
data: {index.html: "hello from the cloud\n"}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: demo-web, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: demo-web}}
  template:
    metadata: {labels: {app: demo-web}}
    spec:
      nodeName: demo-edge
      hostNetwork: true
      containers:
      - name: httpd
        image: localhost/busybox:local
        command: [httpd, -f, -p, "127.0.0.1:18080", -h, /www]
        volumeMounts: [{name: www, mountPath: /www}]
        readinessProbe: {httpGet: {host: 127.0.0.1, port: 18080, path: /}, periodSeconds: 2}
      volumes: [{name: www, configMap: {name: demo-config}}]
YAML
for _ in $(seq 300); do
  "$KUBECTL" get pods -l app=demo-web --no-headers 2>/dev/null | grep -q '1/1 *Running' && break
  sleep 0.2
done
"$KUBECTL" get pods -l app=demo-web -o wide | sed 's/^/    /'
echo "    curl http://127.0.0.1:18080/  ->  $(curl -fsS http://127.0.0.1:18080/ 2>&1)"
POD=$("$KUBECTL" get pods -l app=demo-web -o jsonpath='{.items[0].metadata.name}')

step "kubectl exec into the edge pod: API server -> cloudcore's kubelet API (:10003) -> the node's stream tunnel (:10004) -> CRI"
echo "    kubectl exec $POD -- cat /www/index.html  ->  $("$KUBECTL" exec "$POD" -- cat /www/index.html 2>&1)"

step "kubectl top for the edge: cloudcore serves metrics.k8s.io (APIService -> cloudstream -> tunnel -> CRI stats), no metrics-server"
sed -e 's/CLOUDCORE_HOST/127.0.0.1/' -e "s/CA_BUNDLE/$(base64 -w0 "$RUN/pki/ca.crt")/" build/metrics-apiservice.yaml | "$KUBECTL" apply -f - >/dev/null
for _ in $(seq 100); do
  "$KUBECTL" top pod "$POD" --no-headers >/dev/null 2>&1 && break
  sleep 0.3
done
"$KUBECTL" top node demo-edge 2>&1 | sed 's/^/    /'
"$KUBECTL" top pod 2>&1 | sed 's/^/    /'

step "a DeviceModel and a Device on the edge node; a sensor reports over MQTT, the twin moves in Kubernetes"
mosquitto_sub -h 127.0.0.1 -p 1884 -C 1 -W 20 -t '$hw/events/device/thermometer-1/twin/update/delta' >"$RUN/delta.json" 2>/dev/null &
sub=$!
sleep 0.3 # subscribed before the Device exists, so the first delta is seen
"$KUBECTL" apply -f examples/devices/thermometer-model.yaml >/dev/null
sed 's/nodeName: edge-1/nodeName: demo-edge/' examples/devices/thermometer-device.yaml | "$KUBECTL" apply -f - >/dev/null
wait $sub || true
echo "    the edge told the device its desired value (twin/update/delta): $(head -c 160 "$RUN/delta.json")"
mosquitto_pub -h 127.0.0.1 -p 1884 -q 1 -t '$hw/events/device/thermometer-1/state/update' -m '{"event_id":"demo-state","state":"online"}'
for t in 20.5 21.0 21.4; do
  ms=$(($(date +%s%N) / 1000000))
  mosquitto_pub -h 127.0.0.1 -p 1884 -q 1 -t '$hw/events/device/thermometer-1/twin/update' \
    -m "{\"event_id\":\"demo-$ms\",\"timestamp\":$ms,\"twin\":{\"temperature\":{\"actual\":{\"value\":\"$t\",\"metadata\":{\"timestamp\":$ms}}}}}"
  echo "    mosquitto_pub temperature=$t"
  sleep 0.5
done
for _ in $(seq 50); do
  "$KUBECTL" get device thermometer-1 -o jsonpath='{.status.twins[?(@.propertyName=="temperature")].reported.value}' 2>/dev/null | grep -q 21.4 && break
  sleep 0.2
done
"$KUBECTL" get device thermometer-1 -o jsonpath='{range .status.twins[*]}    {.propertyName}: reported {.reported.value}{"\n"}{end}'
"$KUBECTL" get devices | sed 's/^/    /'

# The plugin framework: a process mapper, a WASM codec hot-swapped under polling, a PluginRollout.
KUBECTL="$KUBECTL" EDGECORE="$BIN/edgecore" EDGE_SOCKET="$PWD/$RUN/edgecore.sock" MQTT_PORT=1884 NODE=demo-edge \
  ./hack/demo-plugins.sh run "$RUN/plugins"

step "the same pod and ConfigMap served by the edge's MetaServer (127.0.0.1:10550, from SQLite, works offline; node-admin token)"
META_TOKEN="$PWD/$RUN/edge/metaserver-admin.token" # written by edgecore (mode 0600); pods use their service-account tokens
for obj in "pods/$POD" configmaps/demo-config; do # whole answer first: head closing the pipe early would fail curl
  curl -fsS --cacert "$RUN/edge/metaserver.crt" -H "Authorization: Bearer $(cat "$META_TOKEN")" "https://127.0.0.1:10550/api/v1/namespaces/default/$obj" -o "$RUN/metaserver.json"
  head -c 300 "$RUN/metaserver.json" | sed 's/^/    /'; echo
done
code=$(curl -sS --cacert "$RUN/edge/metaserver.crt" -o /dev/null -w '%{http_code}' "https://127.0.0.1:10550/api/v1/namespaces/default/configmaps/demo-config")
echo "    without a token: HTTP $code"; [ "$code" = 401 ] || { echo "the MetaServer answered $code without a token, want 401" >&2; exit 1; }

step "the fleet console (https://127.0.0.1:10008/): a ServiceAccount that may see the fleet and pause rollouts"
"$KUBECTL" apply -f - >/dev/null <<'YAML'
apiVersion: v1
kind: ServiceAccount
metadata: {name: kedge-console-demo, namespace: default}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: kedge-console-demo}
rules:
- {apiGroups: [""], resources: [nodes, pods, events], verbs: [get, list, watch]}
- {apiGroups: [devices.kubeedge.io], resources: [devices], verbs: [get, list, watch]}
- {apiGroups: [kedge.io], resources: [pluginrollouts], verbs: [get, list, watch, patch]}
- {apiGroups: [coordination.k8s.io], resources: [leases], verbs: [get, list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: kedge-console-demo}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: kedge-console-demo}
subjects: [{kind: ServiceAccount, name: kedge-console-demo, namespace: default}]
YAML
code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$RUN/pki/ca.crt" https://127.0.0.1:10008/login)
echo "    GET https://127.0.0.1:10008/login (trusting $RUN/pki/ca.crt): HTTP $code"
[ "$code" = 200 ] || { echo "the console answered $code, want 200" >&2; exit 1; }

step "edgecore: the link, the outbox and the modules"
curl -fsS http://127.0.0.1:10360/metrics | grep -E '^kedge_(edgehub_connected|edgehub_upstream_(sent|acked)_total|edgehub_outbox_depth|nodestatus_reports_total)' | sed 's/^/    /'
KEDGE_ADMIN__SOCKET="$PWD/$RUN/edgecore.sock" "$BIN/edgecore" module ls | sed 's/^/    /'
step "what the edge stored (edgecore inspect):"
"$BIN/edgecore" inspect --config "$PWD/$RUN/edgecore.yaml" | sed 's/^/    /'

cat <<TXT

Kedge is running: a local control plane, cloudcore (admin http://127.0.0.1:10006) and edgecore
(admin http://127.0.0.1:10360), state in $RUN/. Try:

  The fleet console: https://127.0.0.1:10008/   (its certificate is from the cluster CA: $RUN/pki/ca.crt)
    log in with the token this prints (paste it into the login form; valid 8 h):
    $KUBECTL --kubeconfig $KUBECONFIG create token kedge-console-demo --duration 8h

  export KUBECONFIG=$KUBECONFIG
  $KUBECTL get nodes --show-labels; $KUBECTL get pods -o wide
  $KUBECTL describe node demo-edge                        # capacity, node info, Lease-backed Ready
  $KUBECTL get pod $POD -o jsonpath='{.spec.tolerations}'  # autonomy: unreachable/not-ready tolerated forever
  curl 127.0.0.1:10360/readyz; curl 127.0.0.1:10360/readyz/cloud   # ready offline; the cloud link apart
  $KUBECTL edit configmap demo-config                     # the change reaches only nodes whose pods use it,
                                                          # and the file httpd serves: curl 127.0.0.1:18080
  $KUBECTL scale deployment demo-web --replicas=0          # edged stops the container within its grace period
  $KUBECTL exec -it $POD -- sh                             # a shell in the edge pod, through the stream tunnel
  $KUBECTL logs -f deploy/demo-web                         # logs from the edge's CRI log file
  $KUBECTL port-forward $POD 18081:18080 & curl 127.0.0.1:18081/   # port-forward into the edge pod
  $KUBECTL top pod; $KUBECTL top node                      # resource metrics from the edge (CRI stats)
  ctr -a $CONTAINERD_DIR/containerd.sock -n k8s.io containers ls   # what runs on the edge
  $KUBECTL --server https://127.0.0.1:10550 --certificate-authority $RUN/edge/metaserver.crt --token "\$(cat $RUN/edge/metaserver-admin.token)" get pods,configmaps   # the edge's MetaServer (read-only, node-admin token)
  $KUBECTL get device thermometer-1 -o yaml               # twins: reported values from the edge
  $KUBECTL get device modbus-t100-1 -o yaml               # the Modbus T-100, read by the process mapper
  $KUBECTL get pluginrollouts                              # the mapper's rollout from the signed registry
  mosquitto_sub -p 1884 -v -t '\$hw/events/device/modbus-t100-1/twin/update/document'   # each reading
  mosquitto_sub -p 1884 -v -t '\$hw/events/#'              # the device API on the edge's embedded broker
  $KUBECTL patch device thermometer-1 --type json -p '[{"op":"replace","path":"/spec/properties/1/desired/value","value":"19"}]'
                                                          # a new desired value: watch the delta topic

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
TXT
