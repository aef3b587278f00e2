{{/* Names and labels, the way users know them from well-kept operator charts. */}}

{{- define "sequestra.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sequestra.fullname" -}}
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

{{- define "sequestra.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sequestra.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sequestra.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sequestra.labels" -}}
helm.sh/chart: {{ include "sequestra.chart" . }}
{{ include "sequestra.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sequestra
{{- end -}}

{{- define "sequestra.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "sequestra.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The username the API server sees for the operator (RBAC, the admission guard's params). */}}
{{- define "sequestra.serviceAccountUser" -}}
system:serviceaccount:{{ .Release.Namespace }}:{{ include "sequestra.serviceAccountName" . }}
{{- end -}}

{{- define "sequestra.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Secrets the operator reads (by name, in its own namespace only): the configured credentials. */}}
{{- define "sequestra.secretNames" -}}
{{- $names := list -}}
{{- $refs := list .Values.kafka.credentialsSecret .Values.alertmanager.webhook.tokenSecret .Values.notifications.digest.slackWebhookSecret .Values.notifications.page.pagerdutyRoutingKeySecret -}}
{{- if .Values.llm.enabled -}}{{- $refs = append $refs .Values.llm.apiKeySecret -}}{{- end -}}
{{- range $refs -}}
{{- if .name -}}{{- $names = append $names .name -}}{{- end -}}
{{- end -}}
{{- concat $names .Values.rbac.extraSecretNames | uniq | sortAlpha | toJson -}}
{{- end -}}
