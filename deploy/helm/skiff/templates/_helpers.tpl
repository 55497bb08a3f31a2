{{/* Names: <release>-skiff unless the release name already contains the chart name. */}}
{{- define "skiff.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "skiff.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component (controller, broker, minio). */}}
{{- define "skiff.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "skiff.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "skiff.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "skiff.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The controllers' headless Service: stable DNS names <fullname>-controller-<i>.<this>. */}}
{{- define "skiff.controllerService" -}}
{{- printf "%s-controller" (include "skiff.fullname" .) -}}
{{- end -}}

{{/* ID=HOST:PORT of every voter: controller pod i has node id i+1. */}}
{{- define "skiff.voters" -}}
{{- $svc := include "skiff.controllerService" . -}}
{{- $voters := list -}}
{{- range $i := until (int .Values.controllers.replicas) -}}
{{- $voters = append $voters (printf "%d=%s-%d.%s.%s.svc.%s:%d" (add $i 1) $svc $i $svc $.Release.Namespace $.Values.clusterDomain (int $.Values.controllers.port)) -}}
{{- end -}}
{{- join "," $voters -}}
{{- end -}}

{{/* HOST:PORT of every controller, for brokers. */}}
{{- define "skiff.controllerAddresses" -}}
{{- $svc := include "skiff.controllerService" . -}}
{{- $addrs := list -}}
{{- range $i := until (int .Values.controllers.replicas) -}}
{{- $addrs = append $addrs (printf "%s-%d.%s.%s.svc.%s:%d" $svc $i $svc $.Release.Namespace $.Values.clusterDomain (int $.Values.controllers.port)) -}}
{{- end -}}
{{- join "," $addrs -}}
{{- end -}}

{{- define "skiff.s3Endpoint" -}}
{{- if .Values.s3.endpoint -}}
{{- .Values.s3.endpoint -}}
{{- else if .Values.minio.enabled -}}
{{- printf "http://%s-minio:9000" (include "skiff.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, if any. */}}
{{- define "skiff.credentialsSecret" -}}
{{- if .Values.s3.credentials.existingSecret -}}
{{- .Values.s3.credentials.existingSecret -}}
{{- else if .Values.s3.credentials.create -}}
{{- printf "%s-s3" (include "skiff.fullname" .) -}}
{{- else if .Values.minio.enabled -}}
{{- printf "%s-minio" (include "skiff.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Environment shared by controllers and brokers: storage, credentials, logs, OpenTelemetry. */}}
{{- define "skiff.commonEnv" -}}
- name: SKIFF_STORAGE
  value: {{ printf "s3://%s/%s" .Values.s3.bucket .Values.s3.prefix | trimSuffix "/" | quote }}
{{- with include "skiff.s3Endpoint" . }}
- name: SKIFF_S3_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- with .Values.s3.region }}
- name: SKIFF_S3_REGION
  value: {{ . | quote }}
{{- end }}
{{- if not (kindIs "invalid" .Values.s3.pathStyle) }}
- name: SKIFF_S3_PATH_STYLE
  value: {{ .Values.s3.pathStyle | quote }}
{{- end }}
{{- if not (kindIs "invalid" .Values.s3.allowHttp) }}
- name: SKIFF_S3_ALLOW_HTTP
  value: {{ .Values.s3.allowHttp | quote }}
{{- end }}
{{- with include "skiff.credentialsSecret" . }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: AWS_ACCESS_KEY_ID
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: AWS_SECRET_ACCESS_KEY
{{- end }}
- name: SKIFF_HTTP_LISTEN
  value: {{ printf "0.0.0.0:%d" (int .Values.metrics.port) | quote }}
- name: SKIFF_DATA_DIR
  value: /var/lib/skiff
{{- with .Values.logLevel }}
- name: SKIFF_LOG
  value: {{ . | quote }}
{{- end }}
{{- if .Values.otel.enabled }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ required "otel.endpoint is required when otel.enabled" .Values.otel.endpoint | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ .Values.otel.protocol | quote }}
- name: OTEL_TRACES_SAMPLER
  value: {{ .Values.otel.sampler | quote }}
{{- if .Values.otel.samplerArg }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ .Values.otel.samplerArg | quote }}
{{- end }}
- name: K8S_POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ printf "k8s.namespace.name=%s,k8s.pod.name=$(K8S_POD_NAME)%s" .Release.Namespace (ternary (printf ",%s" .Values.otel.resourceAttributes) "" (ne .Values.otel.resourceAttributes "")) | quote }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "skiff.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "skiff.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/* Prometheus scrape annotations (the /metrics endpoint on the HTTP port). */}}
{{- define "skiff.scrapeAnnotations" -}}
{{- if .Values.metrics.scrapeAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.metrics.port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end -}}
