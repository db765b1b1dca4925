{{- define "kedge.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}{{ .Release.Name | trunc 50 | trimSuffix "-" }}{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "kedge.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "kedge.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: cloudcore
{{- end -}}

{{- define "kedge.serviceAccount" -}}
{{- default (include "kedge.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "kedge.on" -}}
{{- $m := index .Values.modules .name -}}{{- if and $m $m.enable -}}true{{- end -}}
{{- end -}}

{{/* cloudcore.yaml: the user's module settings with the chart's own keys laid over them. */}}
{{- define "kedge.config" -}}
{{- $mods := deepCopy .Values.modules -}}
{{- $hub := merge (dict "address" "0.0.0.0:10000" "certServerAddress" "0.0.0.0:10002" "pkiDir" "/var/lib/kedge/pki"
      "caSecret" (dict "enable" .Values.caSecret.enable "kubeconfig" "" "namespace" .Release.Namespace "name" .Values.caSecret.name)
      "advertiseAddresses" (concat .Values.advertiseAddresses (list (printf "%s.%s.svc" (include "kedge.fullname" .) .Release.Namespace)))) (dict) -}}
{{- $_ := set $mods "cloudhub" (merge $hub (omit $mods.cloudhub "address" "certServerAddress" "pkiDir" "caSecret")) -}}
{{- if gt (int .Values.replicas) 1 -}}
{{- /* Several replicas: which one holds which node is recorded in Leases (cloudhub.ownership) and a
request for a node held elsewhere is forwarded there (cloudstream.forward), on 10005; the address each
replica is reached at is its pod IP, set by the Deployment (KEDGE_MODULES__CLOUDHUB__OWNERSHIP__FORWARDADDRESS). */ -}}
{{- $own := deepCopy (default (dict) $mods.cloudhub.ownership) -}}
{{- if not (hasKey $own "enable") }}{{ $_ := set $own "enable" true }}{{ end -}}
{{- $_ := set $own "kubeconfig" "" -}}
{{- $_ := set $mods.cloudhub "ownership" $own -}}
{{- if $mods.cloudstream -}}
{{- $fw := deepCopy (default (dict) $mods.cloudstream.forward) -}}
{{- if not (hasKey $fw "enable") }}{{ $_ := set $fw "enable" $own.enable }}{{ end -}}
{{- $_ := set $fw "address" "0.0.0.0:10005" -}}
{{- $_ := set $mods.cloudstream "forward" $fw -}}
{{- end -}}
{{- end -}}
{{- range $n := list "edgecontroller" "devicecontroller" "rolloutcontroller" -}}
{{- if hasKey $mods $n }}{{ $_ := set (index $mods $n) "kubeconfig" "" }}{{ end -}}
{{- end -}}
{{- if $mods.cloudstream -}}
{{- $cs := $mods.cloudstream -}}
{{- $_ := set $cs "streamAddress" "0.0.0.0:10003" -}}
{{- $_ := set $cs "tunnelAddress" "0.0.0.0:10004" -}}
{{- $_ := set $cs "pkiDir" "/var/lib/kedge/pki" -}}
{{- $_ := set $cs "kubeconfig" "" -}}
{{- if not $cs.advertiseAddress }}{{ $_ := set $cs "advertiseAddress" (printf "%s-stream.%s.svc" (include "kedge.fullname" .) .Release.Namespace) }}{{ end -}}
{{- if .Values.cloudstream.clientCA }}{{ $_ := set $cs "clientCAFile" "/etc/kedge/stream-client-ca/ca.crt" }}{{ end -}}
{{- $_ := set $cs "caSecret" (dict "enable" .Values.caSecret.enable "namespace" .Release.Namespace "name" .Values.caSecret.name) -}}
{{- if $cs.metricsAPI -}}
{{- $_ := set $cs.metricsAPI "address" "0.0.0.0:10007" -}}
{{- $_ := set $cs.metricsAPI "serviceName" (printf "%s-metrics" (include "kedge.fullname" .)) -}}
{{- $_ := set $cs.metricsAPI "serviceNamespace" .Release.Namespace -}}
{{- end -}}
{{- end -}}
{{- if $mods.console -}}
{{- $co := $mods.console -}}
{{- $_ := set $co "address" "0.0.0.0:10008" -}}
{{- $_ := set $co "pkiDir" "/var/lib/kedge/pki" -}}
{{- $_ := set $co "kubeconfig" "" -}}
{{- if not $co.advertiseAddress }}{{ $_ := set $co "advertiseAddress" (printf "%s-console.%s.svc" (include "kedge.fullname" .) .Release.Namespace) }}{{ end -}}
{{- $_ := set $co "caSecret" (dict "enable" .Values.caSecret.enable "kubeconfig" "" "namespace" .Release.Namespace "name" .Values.caSecret.name) -}}
{{- end -}}
log:
  level: {{ .Values.log.level }}
  format: {{ .Values.log.format }}
admin:
  address: 0.0.0.0:10006
  socket: /run/kedge/cloudcore.sock
  reload: false
store:
  path: /var/lib/kedge/cloudcore.db
plugins:
  cacheDir: /var/lib/kedge/cloudcore-wasm-cache
modules:
{{ toYaml $mods | indent 2 }}
{{- end -}}
