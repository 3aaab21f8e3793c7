{{- define "jwks-signer.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "jwks-signer.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "jwks-signer.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "jwks-signer.selectorLabels" -}}
app.kubernetes.io/name: {{ include "jwks-signer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "jwks-signer.labels" -}}
helm.sh/chart: {{ include "jwks-signer.chart" . }}
{{ include "jwks-signer.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "jwks-signer.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "jwks-signer.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "jwks-signer.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Secret holding KEY_ENCRYPTION_KEYS and the token hashes: the user's or the chart's. */}}
{{- define "jwks-signer.secretName" -}}
{{- default (include "jwks-signer.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{- define "jwks-signer.configMapName" -}}
{{- printf "%s-config" (include "jwks-signer.fullname" .) }}
{{- end }}

{{- define "jwks-signer.configDir" -}}
/etc/jwks-signer
{{- end }}

{{/* API_CLIENT_TOKEN_SHA256_<NAME>: NAME upper-cased, non-alphanumerics as "_" (as src/config reads it). */}}
{{- define "jwks-signer.clientTokenEnv" -}}
{{- printf "API_CLIENT_TOKEN_SHA256_%s" (regexReplaceAll "[^A-Za-z0-9]" . "_" | upper) }}
{{- end }}

{{/* True ("true") when the chart's own Secret carries API_TOKEN_SHA256. */}}
{{- define "jwks-signer.chartApiToken" -}}
{{- if and (not .Values.secrets.existingSecret) (or .Values.secrets.apiTokenSha256 (not .Values.clients)) }}true{{ end }}
{{- end }}

{{/* Where the Redis password comes from: "chart", "existing" or "" (none). */}}
{{- define "jwks-signer.redisPasswordSource" -}}
{{- if .Values.redis.password }}chart{{ else if .Values.redis.existingSecret }}existing{{ end }}
{{- end }}

{{/*
REDIS_URL: redis.url (templated) with, when a password is configured, `user:$(REDIS_PASSWORD)@`
inserted after the scheme; Kubernetes expands $(REDIS_PASSWORD) from the env var defined before it.
*/}}
{{- define "jwks-signer.redisUrl" -}}
{{- $url := tpl .Values.redis.url . }}
{{- if include "jwks-signer.redisPasswordSource" . }}
{{- $scheme := regexFind "^[A-Za-z][A-Za-z0-9+.-]*://" $url }}
{{- if not $scheme }}
{{- fail (printf "redis.url %q has no scheme (redis://, rediss://, ...)" $url) }}
{{- end }}
{{- $rest := trimPrefix $scheme $url }}
{{- if contains "@" (regexReplaceAll "/.*$" $rest "") }}
{{- fail "redis.url already holds credentials: set them there or through redis.password / redis.existingSecret, not both (set redis.existingSecret to \"\" to use the URL's)" }}
{{- end }}
{{- printf "%s%s:$(REDIS_PASSWORD)@%s" $scheme .Values.redis.username $rest }}
{{- else }}
{{- $url }}
{{- end }}
{{- end }}
