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
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "affectstream.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}
