{{/* Chart name, truncated to Kubernetes' 63 characters. */}}
{{- define "milvus-probe.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: release-chart, unless the release name already contains the chart name. */}}
{{- define "milvus-probe.fullname" -}}
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

{{/* Namespace of every namespaced resource: namespaceOverride, else the release's. */}}
{{- define "milvus-probe.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "milvus-probe.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "milvus-probe.selectorLabels" -}}
app.kubernetes.io/name: {{ include "milvus-probe.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "milvus-probe.labels" -}}
helm.sh/chart: {{ include "milvus-probe.chart" . }}
{{ include "milvus-probe.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: probe
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* registry/repository:tag, or @digest when a digest is set. */}}
{{- define "milvus-probe.image" -}}
{{- $repo := printf "%s/%s" .Values.image.registry .Values.image.repository | trimPrefix "/" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $repo .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* "true" when a feature needs the Kubernetes API (and so a token and RBAC). */}}
{{- define "milvus-probe.needsApi" -}}
{{- if or .Values.discovery.enabled .Values.events.enabled -}}true{{- end -}}
{{- end -}}

{{- define "milvus-probe.automountToken" -}}
{{- if or .Values.serviceAccount.automountToken (include "milvus-probe.needsApi" .) -}}true{{- else -}}false{{- end -}}
{{- end -}}

{{- define "milvus-probe.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "milvus-probe.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
Adds to one target's settings (a dict, changed in place) the paths of the mounted auth and
TLS Secrets, unless the target names its own token or password file.
  include "milvus-probe.withAuthTls" (dict "target" $t "Values" .Values)
*/}}
{{- define "milvus-probe.withAuthTls" -}}
{{- $t := .target -}}
{{- if and .Values.auth.existingSecret (not (hasKey $t "token_file")) (not (hasKey $t "password_file")) -}}
{{- $_ := set $t "token_file" "/etc/milvus-probe/auth/token" -}}
{{- end -}}
{{- if .Values.tls.enabled -}}
{{- $_ := set $t "secure" true -}}
{{- if .Values.tls.existingSecret -}}
{{- $_ := set $t "ca_pem_path" "/etc/milvus-probe/tls/ca.crt" -}}
{{- end -}}
{{- if .Values.tls.serverName -}}
{{- $_ := set $t "server_name" .Values.tls.serverName -}}
{{- end -}}
{{- if .Values.tls.mutual -}}
{{- $_ := set $t "client_pem_path" "/etc/milvus-probe/tls/client.crt" -}}
{{- $_ := set $t "client_key_path" "/etc/milvus-probe/tls/client.key" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The config file milvus-probe reads: no secrets, only paths to them. */}}
{{- define "milvus-probe.config" -}}
{{- $targets := list -}}
{{- range .Values.targets -}}
{{- $t := deepCopy . -}}
{{- include "milvus-probe.withAuthTls" (dict "target" $t "Values" $.Values) -}}
{{- $targets = append $targets $t -}}
{{- end -}}
{{- if .Values.discovery.enabled }}
{{- $template := deepCopy .Values.discovery.template -}}
{{- include "milvus-probe.withAuthTls" (dict "target" $template "Values" .Values) }}
discovery:
  template:
{{ toYaml $template | indent 4 }}
{{- end }}
probe:
  interval: {{ .Values.probe.interval }}
  timeout: {{ .Values.probe.timeout }}
  rpc: {{ .Values.probe.rpc }}
  connect_interval: {{ .Values.probe.connectInterval }}
  max_concurrent: {{ .Values.probe.maxConcurrent }}
readiness:
  policy: {{ .Values.readiness.policy }}
  failure_threshold: {{ .Values.readiness.failureThreshold }}
  success_threshold: {{ .Values.readiness.successThreshold }}
targets:
{{ toYaml $targets | indent 2 }}
{{- end -}}

{{/*
The milvus-probe container. Embed it in another pod (sidecar mode), e.g. in a Milvus
chart's extra containers, or with sidecar.native in its initContainers (Kubernetes >= 1.29);
from a parent chart that depends on this one (alias milvusprobe):

  {{- include "milvus-probe.container" .Subcharts.milvusprobe | nindent 8 }}

Volumes it mounts: config, tmp, and auth/tls when enabled ("milvus-probe.volumes").
*/}}
{{- define "milvus-probe.container" -}}
- name: milvus-probe
  image: {{ include "milvus-probe.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  {{- if .Values.sidecar.native }}
  # A native sidecar (Kubernetes >= 1.29): listed in initContainers, it starts before the
  # Milvus container, keeps running beside it, and is stopped after it.
  restartPolicy: Always
  {{- end }}
  args:
    - serve
    - --config.file=/etc/milvus-probe/config/config.yaml
    - --web.listen-address=:{{ .Values.containerPort }}
    - --log.level={{ .Values.logging.level }}
    - --log.format={{ .Values.logging.format }}
    - --profiling.enabled={{ .Values.profiling.enabled }}
    - --profiling.allow-remote={{ .Values.profiling.allowRemote }}
    - --events.enabled={{ .Values.events.enabled }}
    {{- with .Values.discovery }}
    {{- if .enabled }}
    - --discovery.kubernetes.enabled=true
    - --discovery.kubernetes.namespace={{ .namespace | default (include "milvus-probe.namespace" $) }}
    {{- if .service }}
    - --discovery.kubernetes.service={{ .service }}
    {{- end }}
    {{- if .labelSelector }}
    - --discovery.kubernetes.label-selector={{ .labelSelector }}
    {{- end }}
    {{- if .portName }}
    - --discovery.kubernetes.port-name={{ .portName }}
    {{- end }}
    - --discovery.kubernetes.include-service={{ .includeService }}
    {{- if .managementPort }}
    - --discovery.kubernetes.management-port={{ .managementPort }}
    {{- end }}
    {{- end }}
    {{- end }}
    {{- if .Values.sharding.enabled }}
    - --discovery.shard=auto/{{ .Values.sharding.replicas }}
    {{- end }}
    {{- range .Values.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  env:
    - name: POD_NAME
      valueFrom: { fieldRef: { fieldPath: metadata.name } }
    - name: POD_NAMESPACE
      valueFrom: { fieldRef: { fieldPath: metadata.namespace } }
    {{- with .Values.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    - name: http-metrics
      containerPort: {{ .Values.containerPort }}
      protocol: TCP
  {{- if .Values.startupProbe.enabled }}
  startupProbe:
    httpGet: { path: /healthz, port: http-metrics }
    periodSeconds: {{ .Values.startupProbe.periodSeconds }}
    timeoutSeconds: {{ .Values.startupProbe.timeoutSeconds }}
    failureThreshold: {{ .Values.startupProbe.failureThreshold }}
  {{- end }}
  {{- if .Values.livenessProbe.enabled }}
  livenessProbe:
    httpGet: { path: /healthz, port: http-metrics }
    initialDelaySeconds: {{ .Values.livenessProbe.initialDelaySeconds }}
    periodSeconds: {{ .Values.livenessProbe.periodSeconds }}
    timeoutSeconds: {{ .Values.livenessProbe.timeoutSeconds }}
    failureThreshold: {{ .Values.livenessProbe.failureThreshold }}
  {{- end }}
  {{- if .Values.readinessProbe.enabled }}
  readinessProbe:
    httpGet: { path: /readyz, port: http-metrics }
    initialDelaySeconds: {{ .Values.readinessProbe.initialDelaySeconds }}
    periodSeconds: {{ .Values.readinessProbe.periodSeconds }}
    timeoutSeconds: {{ .Values.readinessProbe.timeoutSeconds }}
    failureThreshold: {{ .Values.readinessProbe.failureThreshold }}
  {{- end }}
  resources:
    {{- toYaml .Values.resources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.containerSecurityContext | nindent 4 }}
  volumeMounts:
    {{- include "milvus-probe.volumeMounts" . | nindent 4 }}
{{- end -}}

{{/* Where the container finds its config, /tmp, and the auth/TLS Secrets. */}}
{{- define "milvus-probe.volumeMounts" -}}
- name: milvus-probe-config
  mountPath: /etc/milvus-probe/config
  readOnly: true
- name: milvus-probe-tmp
  mountPath: /tmp
{{- if .Values.auth.existingSecret }}
- name: milvus-probe-auth
  mountPath: /etc/milvus-probe/auth
  readOnly: true
{{- end }}
{{- if and .Values.tls.enabled .Values.tls.existingSecret }}
- name: milvus-probe-tls
  mountPath: /etc/milvus-probe/tls
  readOnly: true
{{- end }}
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The volumes the container mounts. */}}
{{- define "milvus-probe.volumes" -}}
- name: milvus-probe-config
  configMap:
    name: {{ include "milvus-probe.fullname" . }}
- name: milvus-probe-tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if .Values.auth.existingSecret }}
- name: milvus-probe-auth
  secret:
    secretName: {{ .Values.auth.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ .Values.auth.tokenKey }}
        path: token
{{- end }}
{{- if and .Values.tls.enabled .Values.tls.existingSecret }}
- name: milvus-probe-tls
  secret:
    secretName: {{ .Values.tls.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ .Values.tls.caKey }}
        path: ca.crt
      {{- if .Values.tls.mutual }}
      - key: {{ .Values.tls.clientCertKey }}
        path: client.crt
      - key: {{ .Values.tls.clientKeyKey }}
        path: client.key
      {{- end }}
{{- end }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
Every conflict between values, gathered in one place and reported at once (as Bitnami's
common.validateValues): a user fixes them all in one go instead of one per `helm install`.
Each check appends "<value>: <what is wrong and what to do>"; the ConfigMap, rendered in
every mode, includes this template first.
*/}}
{{- define "milvus-probe.validateValues" -}}
{{- $messages := list -}}
{{- $v := .Values -}}
{{- if and $v.sharding.enabled (not $v.discovery.enabled) -}}
{{- $messages = append $messages "sharding.enabled: sharding splits discovered pods between replicas: set discovery.enabled too" -}}
{{- end -}}
{{- if and $v.sharding.enabled $v.sidecar.enabled -}}
{{- $messages = append $messages "sharding.enabled: sharding runs a StatefulSet, and sidecar.enabled renders no workload: turn one of them off" -}}
{{- end -}}
{{- if and $v.discovery.enabled (eq (empty $v.discovery.service) (empty $v.discovery.labelSelector)) -}}
{{- $messages = append $messages "discovery.service: discovery needs exactly one of discovery.service and discovery.labelSelector" -}}
{{- end -}}
{{- if and $v.sidecar.native (not $v.sidecar.enabled) -}}
{{- $messages = append $messages "sidecar.native: a native sidecar lives in another pod's initContainers: set sidecar.enabled too" -}}
{{- end -}}
{{- if and $v.sidecar.native (semverCompare "<1.29-0" .Capabilities.KubeVersion.Version) -}}
{{- $messages = append $messages (printf "sidecar.native: native sidecars need Kubernetes >= 1.29 (this is %s): turn it off, the container then runs in the pod's containers" .Capabilities.KubeVersion.Version) -}}
{{- end -}}
{{- if and $v.tls.enabled $v.tls.mutual (not $v.tls.existingSecret) -}}
{{- $messages = append $messages "tls.mutual: the client certificate and key come from tls.existingSecret: set it" -}}
{{- end -}}
{{- if $messages -}}
{{- fail (printf "\n\nVALUES VALIDATION:\n%s" (join "\n" $messages)) -}}
{{- end -}}
{{- end -}}

{{/* "true" when a target's address is this pod's own loopback, which no other pod reaches. */}}
{{- define "milvus-probe.isLoopback" -}}
{{- $address := regexReplaceAll "^[a-zA-Z][a-zA-Z0-9+.-]*://" (.uri | default (.host | default "localhost") | toString) "" -}}
{{- if regexMatch "^(localhost|127\\.[0-9.]+|\\[::1\\]|::1|0\\.0\\.0\\.0)([:/]|$)" $address -}}true{{- end -}}
{{- end -}}

{{/*
What the `helm test` pod checks, as YAML (empty when nothing is reachable from its own pod):
the first static target not on loopback (a sidecar's 127.0.0.1 is the Milvus pod's, not
the test pod's), else the Service that discovery watches, on Milvus's port 19530, with the
discovery template's settings. Auth and TLS as the daemon has them.
*/}}
{{- define "milvus-probe.testTarget" -}}
{{- $found := dict -}}
{{- range .Values.targets -}}
{{- if and (not $found) (not (include "milvus-probe.isLoopback" .)) -}}
{{- $found = deepCopy . -}}
{{- end -}}
{{- end -}}
{{- with .Values.discovery -}}
{{- if and (not $found) .enabled .service -}}
{{- $found = deepCopy .template -}}
{{- $ns := .namespace | default (include "milvus-probe.namespace" $) -}}
{{- $_ := set $found "alias" .service -}}
{{- $_ := set $found "uri" (printf "%s.%s.svc:19530" .service $ns) -}}
{{- end -}}
{{- end -}}
{{- if $found -}}
{{- include "milvus-probe.withAuthTls" (dict "target" $found "Values" .Values) -}}
{{- toYaml $found -}}
{{- end -}}
{{- end -}}
