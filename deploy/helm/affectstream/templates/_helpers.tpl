{{/* Names, labels and images shared by the templates. */}}

{{- define "affectstream.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "affectstream.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "affectstream.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "affectstream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: pass (dict "root" $ "component" "agent"). */}}
{{- define "affectstream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "affectstream.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "affectstream.agentImage" -}}
{{- $tag := ternary (.Values.image.cudaTag | default (printf "%s-cuda" .Chart.AppVersion)) (.Values.image.cpuTag | default (printf "%s-cpu" .Chart.AppVersion)) .Values.agent.gpu.enabled -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}

{{- define "affectstream.cpuImage" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.cpuTag | default (printf "%s-cpu" .Chart.AppVersion)) -}}
{{- end -}}

{{- define "affectstream.secretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-secrets" (include "affectstream.fullname" .)) -}}
{{- end -}}

{{/* Pod and container hardening: the images run as uid/gid 10001 with nothing to write but /tmp and state. */}}
{{- define "affectstream.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
fsGroupChangePolicy: OnRootMismatch # no recursive chown of a large spool volume at every start
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "affectstream.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* The agent's StatefulSet (its pods are <this>-0, <this>-1, …) and its headless Service (per-pod DNS). */}}
{{- define "affectstream.agentName" -}}
{{- printf "%s-agent" (include "affectstream.fullname" .) -}}
{{- end -}}

{{- define "affectstream.headlessName" -}}
{{- printf "%s-agent-headless" (include "affectstream.fullname" .) -}}
{{- end -}}

{{/* ingest.public_url: agent.publicUrl (a template), else the pod's own DNS name under the headless Service.
$(POD_NAME) is expanded by Kubernetes from the downward API; it is the pod name even with hostNetwork, where the
process's hostname (what the agent puts for {hostname}) is the node's. */}}
{{- define "affectstream.publicUrl" -}}
{{- if .Values.agent.publicUrl -}}
{{- tpl .Values.agent.publicUrl . -}}
{{- else -}}
{{- $scheme := ternary "https" "http" (hasKey .Values.agent.config "AFFECTSTREAM_INGEST__TLS_CERT_PATH") -}}
{{- printf "%s://$(POD_NAME).%s.%s.svc.%s:%v" $scheme (include "affectstream.headlessName" .) .Release.Namespace .Values.clusterDomain .Values.agent.port -}}
{{- end -}}
{{- end -}}

{{/* The pod's grace period: the agent's drain (running calls go on for at most agent.drainTimeoutSeconds after
SIGTERM) plus agent.drainMarginSeconds to flush and publish each stream's last window and exit. */}}
{{- define "affectstream.terminationGracePeriodSeconds" -}}
{{- add .Values.agent.drainTimeoutSeconds .Values.agent.drainMarginSeconds -}}
{{- end -}}

{{/* Settings the chart sets itself, from the value named here or from the Secret: refused in the config maps,
so that no secret lands in a ConfigMap and no derived value (the grace period) is silently contradicted. */}}
{{- define "affectstream.managedSettings" -}}
AFFECTSTREAM_INGEST__HOST: "the chart (0.0.0.0)"
AFFECTSTREAM_INGEST__PORT: agent.port
AFFECTSTREAM_INGEST__MAX_SESSIONS: agent.maxSessions
AFFECTSTREAM_INGEST__PUBLIC_URL: agent.publicUrl
AFFECTSTREAM_INGEST__DRAIN_TIMEOUT_S: agent.drainTimeoutSeconds
AFFECTSTREAM_INGEST__ICE_SERVERS: agent.turn.servers
AFFECTSTREAM_INGEST__ICE_USERNAME: agent.turn.username
AFFECTSTREAM_INGEST__ICE_CREDENTIAL: secrets.turnCredential
AFFECTSTREAM_INGEST__TOKENS: secrets.ingestTokens
AFFECTSTREAM_INGEST__TOKEN_SECRET: secrets.tokenSecret
AFFECTSTREAM_KAFKA__SASL_PASSWORD: secrets.kafkaSaslPassword
AFFECTSTREAM_PUBLISH__SPOOL_DIR: "agent.spool (mounted at /var/lib/affectstream)"
AFFECTSTREAM_MONITOR__HOST: "the chart (0.0.0.0)"
AFFECTSTREAM_MONITOR__PORT: monitor.port
AFFECTSTREAM_MONITOR__GROUP_ID: monitor.groupId
AFFECTSTREAM_MONITOR__RULES_PATH: monitor.rules
{{- end -}}

{{/* Fails on a name in a settings map that is not a setting or that the chart sets itself: pass
(dict "root" $ "where" "agent.config" "settings" $map). Renders nothing. */}}
{{- define "affectstream.checkSettings" -}}
{{- $managed := include "affectstream.managedSettings" .root | fromYaml -}}
{{- range $name, $value := .settings }}
{{- if not (hasPrefix "AFFECTSTREAM_" $name) }}
{{- fail (printf "%s.%s: settings are environment names starting with AFFECTSTREAM_" $.where $name) }}
{{- end }}
{{- with get $managed $name }}
{{- fail (printf "%s.%s: set by the chart; use %s" $.where $name .) }}
{{- end }}
{{- end }}
{{- end -}}
