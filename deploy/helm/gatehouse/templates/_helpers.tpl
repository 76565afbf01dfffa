{{/*
Names. Every object is "<fullname>-<part>", cut to 63 characters.
*/}}
{{- define "gatehouse.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "gatehouse.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "<fullname>-<part>": call with (list . "part"). */}}
{{- define "gatehouse.part" -}}
{{- $top := index . 0 -}}
{{- printf "%s-%s" (include "gatehouse.fullname" $top) (index . 1) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "gatehouse.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object; call with (list . "component"). */}}
{{- define "gatehouse.labels" -}}
{{- $top := index . 0 -}}
helm.sh/chart: {{ include "gatehouse.chart" $top }}
{{ include "gatehouse.selectorLabels" . }}
app.kubernetes.io/version: {{ $top.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $top.Release.Service }}
app.kubernetes.io/part-of: gatehouse
{{- end -}}

{{- define "gatehouse.selectorLabels" -}}
{{- $top := index . 0 -}}
app.kubernetes.io/name: {{ include "gatehouse.name" $top }}
app.kubernetes.io/instance: {{ $top.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "gatehouse.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
Where things live inside the containers. The emptyDirs are mounted one level above the
directories Gatehouse uses: Gatehouse creates those itself with mode 0700, which it could
not impose on a mount point it does not own.
*/}}
{{- define "gatehouse.paths.bin" -}}/usr/local/bin{{- end -}}
{{- define "gatehouse.paths.prefixVolume" -}}/var/lib/gatehouse{{- end -}}
{{- define "gatehouse.paths.prefix" -}}/var/lib/gatehouse/prefix{{- end -}}
{{- define "gatehouse.paths.cacheVolume" -}}/var/cache/gatehouse{{- end -}}
{{- define "gatehouse.paths.cache" -}}/var/cache/gatehouse/dp{{- end -}}
{{- define "gatehouse.paths.clusterCert" -}}/etc/gatehouse/cluster{{- end -}}
{{- define "gatehouse.paths.clusterCa" -}}/etc/gatehouse/cluster-ca{{- end -}}
{{- define "gatehouse.paths.adminCert" -}}/etc/gatehouse/admin-tls{{- end -}}
{{- define "gatehouse.paths.proxyCert" -}}/etc/gatehouse/proxy-tls{{- end -}}

{{/* Fixed container ports (the Services map their own ports onto these). */}}
{{- define "gatehouse.ports.admin" -}}8001{{- end -}}
{{- define "gatehouse.ports.adminSsl" -}}8444{{- end -}}
{{- define "gatehouse.ports.cluster" -}}8005{{- end -}}
{{- define "gatehouse.ports.proxy" -}}8000{{- end -}}
{{- define "gatehouse.ports.proxySsl" -}}8443{{- end -}}
{{- define "gatehouse.ports.status" -}}8100{{- end -}}

{{/* Listen address "<bindAddress>:<port>"; call with (list . port). */}}
{{- define "gatehouse.listen" -}}
{{- $top := index . 0 -}}
{{- printf "%s:%d" $top.Values.bindAddress (int (index . 1)) -}}
{{- end -}}

{{/* Secret names. */}}
{{- define "gatehouse.adminTokenSecret" -}}
{{- default (include "gatehouse.part" (list . "admin-token")) .Values.admin.token.existingSecret -}}
{{- end -}}
{{- define "gatehouse.adminTokenKey" -}}
{{- if .Values.admin.token.existingSecret -}}{{ .Values.admin.token.existingSecretKey }}{{- else -}}token{{- end -}}
{{- end -}}

{{/*
"true" when the chart makes the cluster certificates itself: shared mode without
cluster.certSecret (one self-signed pair), or pki mode without cluster.certSecret and
cluster.caSecret (a CA, and a control-plane and a data-plane certificate it signed).
*/}}
{{- define "gatehouse.clusterGenerated" -}}
{{- $c := .Values.cluster -}}
{{- if and (eq $c.mtls "shared") (not $c.certSecret) -}}true
{{- else if and (eq $c.mtls "pki") (not $c.certSecret) (not $c.caSecret) -}}true
{{- end -}}
{{- end -}}

{{- define "gatehouse.clusterCertSecret" -}}
{{- default (include "gatehouse.part" (list . "cluster-cert")) .Values.cluster.certSecret -}}
{{- end -}}
{{- define "gatehouse.dataPlaneCertSecret" -}}
{{- if and (eq .Values.cluster.mtls "pki") (include "gatehouse.clusterGenerated" .) -}}
{{- include "gatehouse.part" (list . "cluster-dp-cert") -}}
{{- else -}}
{{- default (include "gatehouse.clusterCertSecret" .) .Values.cluster.dataPlaneCertSecret -}}
{{- end -}}
{{- end -}}
{{- define "gatehouse.clusterCaSecret" -}}
{{- default (include "gatehouse.part" (list . "cluster-ca")) .Values.cluster.caSecret -}}
{{- end -}}

{{- define "gatehouse.postgresqlName" -}}
{{- include "gatehouse.part" (list . "postgresql") -}}
{{- end -}}

{{/* Where GATEHOUSE_DATABASE_URL comes from: (dict "name" … "key" …) as JSON. */}}
{{- define "gatehouse.databaseSecret" -}}
{{- if .Values.database.existingSecret -}}
{{- dict "name" .Values.database.existingSecret "key" .Values.database.existingSecretKey | toJson -}}
{{- else if .Values.postgresql.enabled -}}
{{- dict "name" (include "gatehouse.postgresqlName" .) "key" "database-url" | toJson -}}
{{- else -}}
{{- dict "name" (include "gatehouse.part" (list . "database")) "key" "database-url" | toJson -}}
{{- end -}}
{{- end -}}

{{/*
Refuses values that cannot work, with a message naming what to set. Included by every
template that depends on them, so `helm template` fails as `helm install` would.
*/}}
{{- define "gatehouse.validate" -}}
{{- $sources := 0 -}}
{{- if .Values.database.url }}{{ $sources = add1 $sources }}{{ end -}}
{{- if .Values.database.existingSecret }}{{ $sources = add1 $sources }}{{ end -}}
{{- if .Values.postgresql.enabled }}{{ $sources = add1 $sources }}{{ end -}}
{{- if eq $sources 0 -}}
{{- fail "gatehouse: no database configured: set database.url, database.existingSecret, or postgresql.enabled=true (a single-pod Postgres for trying Gatehouse out)" -}}
{{- end -}}
{{- if gt $sources 1 -}}
{{- fail "gatehouse: set only one of database.url, database.existingSecret and postgresql.enabled" -}}
{{- end -}}
{{- if and .Values.database.url (not (hasPrefix "postgres" .Values.database.url)) -}}
{{- fail "gatehouse: database.url must be a postgres:// URL (SQLite cannot be shared by several control-plane replicas)" -}}
{{- end -}}
{{- $c := .Values.cluster -}}
{{- if eq $c.mtls "pki" -}}
{{- if and $c.certSecret (not $c.caSecret) -}}
{{- fail "gatehouse: cluster.mtls=pki with cluster.certSecret needs cluster.caSecret (a Secret holding ca.crt); leave both empty to let the chart make a CA" -}}
{{- end -}}
{{- if and $c.caSecret (not $c.certSecret) -}}
{{- fail "gatehouse: cluster.mtls=pki with cluster.caSecret needs cluster.certSecret (the control plane's certificate, issued by the CA, carrying cluster.serverName)" -}}
{{- end -}}
{{- if and $c.dataPlaneCertSecret (not $c.certSecret) -}}
{{- fail "gatehouse: cluster.dataPlaneCertSecret needs cluster.certSecret and cluster.caSecret" -}}
{{- end -}}
{{- else -}}
{{- if $c.dataPlaneCertSecret -}}
{{- fail "gatehouse: cluster.dataPlaneCertSecret is used only with cluster.mtls=pki" -}}
{{- end -}}
{{- if $c.caSecret -}}
{{- fail "gatehouse: cluster.caSecret is used only with cluster.mtls=pki" -}}
{{- end -}}
{{- end -}}
{{- if and (eq $c.mtls "off") $c.certSecret -}}
{{- fail "gatehouse: cluster.certSecret is not used with cluster.mtls=off" -}}
{{- end -}}
{{- $as := .Values.dataPlane.autoscaling -}}
{{- if and $as.enabled (gt (int $as.minReplicas) (int $as.maxReplicas)) -}}
{{- fail "gatehouse: dataPlane.autoscaling.minReplicas is above maxReplicas" -}}
{{- end -}}
{{- if and $as.enabled (not $as.targetCPUUtilizationPercentage) (not $as.targetMemoryUtilizationPercentage) -}}
{{- fail "gatehouse: dataPlane.autoscaling needs targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage" -}}
{{- end -}}
{{- end -}}

{{/* Pod-level security context of the Gatehouse pods. */}}
{{- define "gatehouse.podSecurityContext" -}}
runAsNonRoot: true
{{- with .Values.securityContext.runAsUser }}
runAsUser: {{ . }}
{{- end }}
{{- with .Values.securityContext.runAsGroup }}
runAsGroup: {{ . }}
{{- end }}
{{- with .Values.securityContext.fsGroup }}
fsGroup: {{ . }}
{{- end }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container-level security context of every container of the chart. */}}
{{- define "gatehouse.containerSecurityContext" -}}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop:
  - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* An HTTP probe; call with (dict "path" … "port" … "probe" <timings>). */}}
{{- define "gatehouse.httpProbe" -}}
httpGet:
  path: {{ .path }}
  port: {{ .port }}
  scheme: HTTP
{{- range $k, $v := .probe }}
{{ $k }}: {{ $v }}
{{- end }}
{{- end -}}

{{/* Topology spread over nodes; call with (list . component settings). */}}
{{- define "gatehouse.topologySpread" -}}
{{- $top := index . 0 -}}
{{- $s := index . 2 -}}
{{- if $s.enabled }}
topologySpreadConstraints:
- maxSkew: {{ $s.maxSkew }}
  topologyKey: {{ $s.topologyKey }}
  whenUnsatisfiable: {{ $s.whenUnsatisfiable }}
  labelSelector:
    matchLabels:
      {{- include "gatehouse.selectorLabels" (list $top (index . 1)) | nindent 6 }}
{{- end }}
{{- end -}}

{{/* Scheduling fields shared by a component's pods; call with (list . settings). */}}
{{- define "gatehouse.scheduling" -}}
{{- $s := index . 1 -}}
{{- with $s.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $s.tolerations }}
tolerations:
{{- toYaml . | nindent 0 }}
{{- end }}
{{- with $s.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end -}}

{{/* Pod fields every Gatehouse pod shares. */}}
{{- define "gatehouse.podCommon" -}}
{{- with .Values.serviceAccountName }}
serviceAccountName: {{ . }}
{{- end }}
automountServiceAccountToken: false
enableServiceLinks: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- toYaml . | nindent 0 }}
{{- end }}
securityContext:
  {{- include "gatehouse.podSecurityContext" . | nindent 2 }}
{{- end -}}

{{/*
The environment of `gatehouse-cp migrations up`: only the database and logging. Call with
(list . <database secret as (dict "name" "key")>).
*/}}
{{- define "gatehouse.migrationsEnv" -}}
{{- $top := index . 0 -}}
{{- $db := index . 1 -}}
- name: GATEHOUSE_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $db.name }}
      key: {{ $db.key }}
- name: GATEHOUSE_LOG_LEVEL
  value: {{ $top.Values.log.level | quote }}
- name: GATEHOUSE_LOG_FORMAT
  value: {{ $top.Values.log.format | quote }}
{{- end -}}

{{/* The `gatehouse-cp migrations up` container; call with (list . <database secret>). */}}
{{- define "gatehouse.migrationsContainer" -}}
{{- $top := index . 0 -}}
- name: migrations
  image: {{ include "gatehouse.image" $top }}
  imagePullPolicy: {{ $top.Values.image.pullPolicy }}
  command:
  - {{ include "gatehouse.paths.bin" $top }}/gatehouse-cp
  args:
  - migrations
  - up
  env:
  {{- include "gatehouse.migrationsEnv" . | nindent 2 }}
  securityContext:
    {{- include "gatehouse.containerSecurityContext" $top | nindent 4 }}
  resources:
    {{- toYaml $top.Values.migrations.resources | nindent 4 }}
{{- end -}}

{{/* Cluster mTLS environment, the same names on both planes. */}}
{{- define "gatehouse.clusterEnv" -}}
- name: GATEHOUSE_CLUSTER_MTLS
  value: {{ .Values.cluster.mtls | quote }}
{{- if ne .Values.cluster.mtls "off" }}
- name: GATEHOUSE_CLUSTER_CERT
  value: {{ include "gatehouse.paths.clusterCert" . }}/tls.crt
- name: GATEHOUSE_CLUSTER_CERT_KEY
  value: {{ include "gatehouse.paths.clusterCert" . }}/tls.key
{{- end }}
{{- if eq .Values.cluster.mtls "pki" }}
- name: GATEHOUSE_CLUSTER_CA_CERT
  value: {{ include "gatehouse.paths.clusterCa" . }}/ca.crt
{{- end }}
{{- end -}}

{{/* Cluster mTLS volumes; call with (list . "cp"|"dp"). */}}
{{- define "gatehouse.clusterVolumes" -}}
{{- $top := index . 0 -}}
{{- if ne $top.Values.cluster.mtls "off" }}
- name: cluster-cert
  secret:
    secretName: {{ eq (index . 1) "dp" | ternary (include "gatehouse.dataPlaneCertSecret" $top) (include "gatehouse.clusterCertSecret" $top) }}
    defaultMode: 0440
    items:
    - key: tls.crt
      path: tls.crt
    - key: tls.key
      path: tls.key
{{- end }}
{{- if eq $top.Values.cluster.mtls "pki" }}
- name: cluster-ca
  secret:
    secretName: {{ include "gatehouse.clusterCaSecret" $top }}
    defaultMode: 0444
    items:
    - key: ca.crt
      path: ca.crt
{{- end }}
{{- end -}}

{{- define "gatehouse.clusterVolumeMounts" -}}
{{- if ne .Values.cluster.mtls "off" }}
- name: cluster-cert
  mountPath: {{ include "gatehouse.paths.clusterCert" . }}
  readOnly: true
{{- end }}
{{- if eq .Values.cluster.mtls "pki" }}
- name: cluster-ca
  mountPath: {{ include "gatehouse.paths.clusterCa" . }}
  readOnly: true
{{- end }}
{{- end -}}

{{/* A kubernetes.io/tls Secret as a volume: call with (list <volume name> <secret name>). */}}
{{- define "gatehouse.tlsVolume" -}}
- name: {{ index . 0 }}
  secret:
    secretName: {{ index . 1 }}
    defaultMode: 0440
    items:
    - key: tls.crt
      path: tls.crt
    - key: tls.key
      path: tls.key
{{- end -}}

{{/*
A Secret's data as it is stored in the cluster (JSON), or {} when there is none (and always
under `helm template`): what the chart generates once is read back on every upgrade.
Call with (dict "namespace" … "name" …).
*/}}
{{- define "gatehouse.keptSecretData" -}}
{{- $existing := lookup "v1" "Secret" .namespace .name | default dict -}}
{{- $data := get $existing "data" | default dict -}}
{{- toJson $data -}}
{{- end -}}
