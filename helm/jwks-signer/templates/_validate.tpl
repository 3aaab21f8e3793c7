{{/* Checks across values that values.schema.json cannot express. */}}
{{- define "jwks-signer.validate" -}}
{{- $v := .Values }}
{{- if eq (int $v.ports.public) (int $v.ports.internal) }}
{{- fail "ports.public and ports.internal must differ" }}
{{- end }}
{{- if and (not $v.redis.url) (not $v.redis.sentinel.sentinels) (not $v.redis.cluster.nodes) (or $v.autoscaling.enabled (gt (int $v.replicaCount) 1)) }}
{{- fail "redis.url is empty: without Redis each replica keeps its own keys; set redis.url (or redis.sentinel / redis.cluster) or run one replica" }}
{{- end }}
{{- if and $v.redis.sentinel.sentinels (not $v.redis.sentinel.masterName) }}
{{- fail "redis.sentinel.masterName is required with redis.sentinel.sentinels" }}
{{- end }}
{{- if and $v.redis.sentinel.sentinels $v.redis.cluster.nodes }}
{{- fail "redis.sentinel.sentinels and redis.cluster.nodes exclude each other: set the one that matches the Redis topology" }}
{{- end }}
{{- if and $v.redis.cluster.nodes (hasPrefix "redis+sentinel" (toString $v.redis.url)) }}
{{- fail "redis.url is a redis+sentinel:// URL, but redis.cluster.nodes selects a Cluster" }}
{{- end }}
{{- if and $v.redis.sentinel.authWithRedisPassword (not (include "jwks-signer.redisPasswordSource" .)) }}
{{- fail "redis.sentinel.authWithRedisPassword needs a Redis password (redis.existingSecret or redis.password)" }}
{{- end }}
{{- if and $v.secrets.existingSecret $v.redis.password }}
{{- fail "with secrets.existingSecret, give the Redis password through redis.existingSecret, not redis.password" }}
{{- end }}
{{- if not (hasKey $v.keySets $v.defaultKeySet) }}
{{- fail (printf "defaultKeySet %q is not a key of keySets" $v.defaultKeySet) }}
{{- end }}
{{- if and $v.autoscaling.enabled (lt (int $v.autoscaling.maxReplicas) (int $v.autoscaling.minReplicas)) }}
{{- fail "autoscaling.maxReplicas must be >= autoscaling.minReplicas" }}
{{- end }}
{{- $envNames := dict }}
{{- $clientNames := dict }}
{{- range $v.clients }}
{{- $env := include "jwks-signer.clientTokenEnv" .name }}
{{- if hasKey $envNames $env }}
{{- fail (printf "clients %q and %q both map to %s" (get $envNames $env) .name $env) }}
{{- end }}
{{- $_ := set $envNames $env .name }}
{{- $_ := set $clientNames .name true }}
{{- if and (not $v.secrets.existingSecret) (not (hasKey $v.secrets.clientTokenSha256 .name)) }}
{{- fail (printf "secrets.clientTokenSha256.%s is required (hex SHA-256 of client %q's token)" .name .name) }}
{{- end }}
{{- end }}
{{- range $name, $_ := $v.secrets.clientTokenSha256 }}
{{- if not (hasKey $clientNames $name) }}
{{- fail (printf "secrets.clientTokenSha256.%s names no entry of clients" $name) }}
{{- end }}
{{- end }}
{{- end }}
