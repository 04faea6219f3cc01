{{/* Names ------------------------------------------------------------------------------- */}}

{{- define "labelloop.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "labelloop.fullname" -}}
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

{{/* A component's resource name: <fullname>-<component>. Call with (list $ "ingest"). */}}
{{- define "labelloop.componentName" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%s" (include "labelloop.fullname" $root | trunc 48 | trimSuffix "-") (index . 1) -}}
{{- end -}}

{{- define "labelloop.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "labelloop.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Labels ------------------------------------------------------------------------------ */}}

{{- define "labelloop.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "labelloop.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: labelloop
{{- end -}}

{{/* Call with (list $ "ingest"). */}}
{{- define "labelloop.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "labelloop.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "labelloop.componentLabels" -}}
{{ include "labelloop.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* Images ------------------------------------------------------------------------------ */}}

{{/* Call with (list $ gpuEnabled). */}}
{{- define "labelloop.image" -}}
{{- $root := index . 0 -}}
{{- $tag := default $root.Chart.AppVersion $root.Values.image.tag -}}
{{- if index . 1 -}}
{{- $tag = printf "%s%s" $tag $root.Values.image.gpuTagSuffix -}}
{{- end -}}
{{- printf "%s:%s" $root.Values.image.repository $tag -}}
{{- end -}}

{{/* Secrets ----------------------------------------------------------------------------- */}}

{{- define "labelloop.generatedSecretName" -}}
{{- include "labelloop.componentName" (list . "secrets") -}}
{{- end -}}

{{/* The Secret holding a credential: its existingSecret, or the opt-in chart-made one. */}}
{{- define "labelloop.secretFor" -}}
{{- $root := index . 0 -}}
{{- $existing := index . 1 -}}
{{- $what := index . 2 -}}
{{- if $existing -}}
{{- $existing -}}
{{- else if $root.Values.secrets.create -}}
{{- include "labelloop.generatedSecretName" $root -}}
{{- else -}}
{{- fail (printf "%s: set %s.existingSecret (the name of a Secret you created), or secrets.create=true with the values given by --set" $what $what) -}}
{{- end -}}
{{- end -}}

{{- define "labelloop.s3Secret" -}}
{{- include "labelloop.secretFor" (list . .Values.s3.existingSecret "s3") -}}
{{- end -}}

{{- define "labelloop.databaseSecret" -}}
{{- include "labelloop.secretFor" (list . .Values.database.existingSecret "database") -}}
{{- end -}}

{{- define "labelloop.authSecret" -}}
{{- include "labelloop.secretFor" (list . .Values.auth.existingSecret "auth") -}}
{{- end -}}

{{/* The database URL as env entries: the password (or whole URL) only by secretKeyRef. */}}
{{- define "labelloop.databaseEnv" -}}
{{- $db := .Values.database -}}
{{- if $db.urlKey -}}
- name: LABELLOOP_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ required "database.urlKey reads the URL from database.existingSecret: set it" $db.existingSecret }}
      key: {{ $db.urlKey }}
{{- else -}}
{{- $host := required "database.host is required (or database.urlKey with database.existingSecret)" $db.host -}}
- name: LABELLOOP_DATABASE_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "labelloop.databaseSecret" . }}
      key: {{ $db.passwordKey }}
- name: LABELLOOP_DATABASE_URL
  {{- $query := ternary (printf "?sslmode=%s" $db.sslmode) "" (not (empty $db.sslmode)) }}
  value: {{ printf "postgresql+psycopg://%s:$(LABELLOOP_DATABASE_PASSWORD)@%s:%v/%s%s" $db.user $host $db.port $db.name $query | quote }}
{{- end -}}
{{- end -}}

{{/* Pods -------------------------------------------------------------------------------- */}}

{{- define "labelloop.httpProbes" -}}
{{- $p := .Values.probes -}}
startupProbe:
  httpGet: {path: /healthz, port: http}
  periodSeconds: {{ $p.startup.periodSeconds }}
  timeoutSeconds: {{ $p.startup.timeoutSeconds }}
  failureThreshold: {{ $p.startup.failureThreshold }}
livenessProbe:
  httpGet: {path: /healthz, port: http}
  initialDelaySeconds: {{ $p.liveness.initialDelaySeconds }}
  periodSeconds: {{ $p.liveness.periodSeconds }}
  timeoutSeconds: {{ $p.liveness.timeoutSeconds }}
  failureThreshold: {{ $p.liveness.failureThreshold }}
readinessProbe:
  httpGet: {path: /readyz, port: http}
  initialDelaySeconds: {{ $p.readiness.initialDelaySeconds }}
  periodSeconds: {{ $p.readiness.periodSeconds }}
  timeoutSeconds: {{ $p.readiness.timeoutSeconds }}
  failureThreshold: {{ $p.readiness.failureThreshold }}
{{- end -}}

{{/* Settings every service reads (non-secret), as LABELLOOP_* variables. */}}
{{- define "labelloop.configData" -}}
LABELLOOP_ENVIRONMENT: {{ .Values.environment | quote }}
LABELLOOP_LOG_LEVEL: {{ .Values.logLevel | quote }}
LABELLOOP_KAFKA_BOOTSTRAP_SERVERS: {{ required "kafka.bootstrapServers is required" .Values.kafka.bootstrapServers | quote }}
LABELLOOP_KAFKA_TOPIC_PREFIX: {{ .Values.kafka.topicPrefix | quote }}
LABELLOOP_KAFKA_GROUP_PREFIX: {{ .Values.kafka.groupPrefix | quote }}
LABELLOOP_KAFKA_PARTITIONS: {{ .Values.kafka.partitions | quote }}
LABELLOOP_KAFKA_REPLICATION_FACTOR: {{ .Values.kafka.replicationFactor | quote }}
{{ include "labelloop.kafkaConfig" . }}
LABELLOOP_S3_ENDPOINT: {{ required "s3.endpoint is required" .Values.s3.endpoint | quote }}
LABELLOOP_S3_SECURE: {{ .Values.s3.secure | quote }}
LABELLOOP_S3_BUCKET: {{ .Values.s3.bucket | quote }}
LABELLOOP_TRITON_ENABLED: {{ .Values.triton.enabled | quote }}
LABELLOOP_TRITON_HOST: {{ include "labelloop.componentName" (list . "triton") | quote }}
LABELLOOP_TRITON_HTTP_PORT: "8000"
LABELLOOP_TRITON_GRPC_PORT: "8001"
LABELLOOP_TRITON_METRICS_PORT: "8002"
LABELLOOP_API_HOST: "0.0.0.0"
LABELLOOP_API_PORT: "8080"
LABELLOOP_VAR_DIR: /var/lib/labelloop
LABELLOOP_CACHE_DIR: /tmp/labelloop-cache
{{- range $name, $value := .Values.config }}
{{ $name }}: {{ $value | quote }}
{{- end }}
{{- end -}}

{{/* Credentials every service needs, each by secretKeyRef (never a value). */}}
{{- define "labelloop.secretEnv" -}}
- name: LABELLOOP_S3_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "labelloop.s3Secret" . }}
      key: {{ .Values.s3.accessKeyKey }}
- name: LABELLOOP_S3_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "labelloop.s3Secret" . }}
      key: {{ .Values.s3.secretKeyKey }}
- name: LABELLOOP_ADMIN_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "labelloop.authSecret" . }}
      key: {{ .Values.auth.adminTokenKey }}
{{ include "labelloop.databaseEnv" . }}
{{- include "labelloop.kafkaEnv" . }}
{{- end -}}

{{/* Is this consumer's Deployment sized by KEDA or an HPA (so it must not set replicas)?
The trainer only by KEDA (its queue is in the database: a CPU HPA would not see it). */}}
{{- define "labelloop.autoscaled" -}}
{{- $root := index . 0 -}}
{{- $svc := index . 1 -}}
{{- $trainer := eq (index . 2) "trainer" -}}
{{- if and $svc.autoscaling $svc.autoscaling.enabled (or (not $trainer) $root.Values.keda.enabled) -}}true{{- end -}}
{{- end -}}

{{/* Kafka security ---------------------------------------------------------------------- */}}

{{- define "labelloop.kafkaSasl" -}}
{{- if hasPrefix "SASL_" .Values.kafka.securityProtocol -}}true{{- end -}}
{{- end -}}

{{- define "labelloop.kafkaTls" -}}
{{- if hasSuffix "SSL" .Values.kafka.securityProtocol -}}true{{- end -}}
{{- end -}}

{{/* The Kafka password's key: passwordKey in kafka.sasl.existingSecret; in the chart-made
Secret its own key, since the database password's default key is also `password`. */}}
{{- define "labelloop.kafkaPasswordKey" -}}
{{- ternary .Values.kafka.sasl.passwordKey "kafka-password" (not (empty .Values.kafka.sasl.existingSecret)) -}}
{{- end -}}

{{/* Files mounted from kafka.tls's Secrets (one projected volume). */}}
{{- define "labelloop.kafkaTlsDir" -}}/etc/labelloop/kafka{{- end -}}

{{- define "labelloop.kafkaTlsVolume" -}}
{{- if or .Values.kafka.tls.caSecret .Values.kafka.tls.clientSecret -}}true{{- end -}}
{{- end -}}

{{/* Refuse at install time what the services would refuse at start (labelloop/config.py). */}}
{{- define "labelloop.kafkaChecks" -}}
{{- $k := .Values.kafka -}}
{{- $tls := include "labelloop.kafkaTls" . -}}
{{- if and (include "labelloop.kafkaSasl" .) (not $k.sasl.username) -}}
{{- fail (printf "kafka.sasl.username is required with kafka.securityProtocol=%s" $k.securityProtocol) -}}
{{- end -}}
{{- if and (not $tls) (or $k.tls.caSecret $k.tls.clientSecret) -}}
{{- fail (printf "kafka.tls Secrets are given but kafka.securityProtocol=%s uses no TLS: use SSL or SASL_SSL" $k.securityProtocol) -}}
{{- end -}}
{{- $authenticated := or (include "labelloop.kafkaSasl" .) $k.tls.clientSecret -}}
{{- if and (eq .Values.environment "cluster") (not $authenticated) (not $k.allowUnauthenticated) -}}
{{- fail (printf "kafka.securityProtocol=%s authenticates no client, so any pod that reaches the brokers can forge labelloop's events: use SASL_SSL (kafka.sasl.*) or SSL with kafka.tls.clientSecret, or set kafka.allowUnauthenticated=true for a broker its own NetworkPolicies restrict" $k.securityProtocol) -}}
{{- end -}}
{{- if and (eq .Values.environment "cluster") (eq $k.securityProtocol "SASL_PLAINTEXT") (eq $k.sasl.mechanism "PLAIN") -}}
{{- fail "kafka.sasl.mechanism=PLAIN over SASL_PLAINTEXT sends the password in clear: use SASL_SSL or SCRAM" -}}
{{- end -}}
{{- end -}}

{{/* Non-secret Kafka settings (the ConfigMap). */}}
{{- define "labelloop.kafkaConfig" -}}
{{- $k := .Values.kafka -}}
{{- $dir := include "labelloop.kafkaTlsDir" . -}}
LABELLOOP_KAFKA_SECURITY_PROTOCOL: {{ $k.securityProtocol | quote }}
LABELLOOP_KAFKA_ALLOW_UNAUTHENTICATED: {{ $k.allowUnauthenticated | quote }}
{{- if include "labelloop.kafkaSasl" . }}
LABELLOOP_KAFKA_SASL_MECHANISM: {{ $k.sasl.mechanism | quote }}
{{- end }}
{{- if $k.tls.caSecret }}
LABELLOOP_KAFKA_SSL_CAFILE: {{ printf "%s/ca.crt" $dir | quote }}
{{- end }}
{{- if $k.tls.clientSecret }}
LABELLOOP_KAFKA_SSL_CERTFILE: {{ printf "%s/tls.crt" $dir | quote }}
LABELLOOP_KAFKA_SSL_KEYFILE: {{ printf "%s/tls.key" $dir | quote }}
{{- end }}
{{- end -}}

{{/* Kafka credentials as env entries: the username as a value (KEDA's TriggerAuthentication
reads it from the scale target's container), the password only by secretKeyRef. */}}
{{- define "labelloop.kafkaEnv" -}}
{{- if include "labelloop.kafkaSasl" . }}
- name: LABELLOOP_KAFKA_SASL_USERNAME
  value: {{ .Values.kafka.sasl.username | quote }}
- name: LABELLOOP_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "labelloop.secretFor" (list . .Values.kafka.sasl.existingSecret "kafka.sasl") }}
      key: {{ include "labelloop.kafkaPasswordKey" . }}
{{- end }}
{{- end -}}

{{- define "labelloop.kafkaVolumeMounts" -}}
{{- if include "labelloop.kafkaTlsVolume" . }}
- name: kafka-tls
  mountPath: {{ include "labelloop.kafkaTlsDir" . }}
  readOnly: true
{{- end }}
{{- end -}}

{{- define "labelloop.kafkaVolumes" -}}
{{- $t := .Values.kafka.tls -}}
{{- if include "labelloop.kafkaTlsVolume" . }}
- name: kafka-tls
  projected:
    # Readable by the pod's fsGroup only.
    defaultMode: 0440
    sources:
      {{- if $t.caSecret }}
      - secret:
          name: {{ $t.caSecret }}
          items:
            - {key: {{ $t.caKey }}, path: ca.crt}
      {{- end }}
      {{- if $t.clientSecret }}
      - secret:
          name: {{ $t.clientSecret }}
          items:
            - {key: {{ $t.certKey }}, path: tls.crt}
            - {key: {{ $t.keyKey }}, path: tls.key}
      {{- end }}
{{- end }}
{{- end -}}
