{{- /* atoll.homeserver.config: the atoll-homeserver config file (keys of homeserver/config). shard.name comes from --shard-name. */ -}}
{{- define "atoll.homeserver.config" -}}
{{- $c := .root.Values.config -}}
shard:
  name: ""
  advertise_url: ""
listen:
  client: ":8008"
  admin: ":8081"
  metrics: ":9090"
database:
  url_file: /etc/atoll/credentials/database-url
  max_conns: {{ $c.databaseMaxConns }}
redis:
  url_file: /etc/atoll/credentials/redis-url
admin:
  token_file: /etc/atoll/credentials/admin-token
tenants:
  idle_evict: {{ $c.tenants.idleEvict }}
  max_loaded: {{ $c.tenants.maxLoaded }}
  lease_duration: {{ $c.tenants.leaseDuration }}
push:
  {{- $push := include "atoll.lib.names.fullname" (dict "root" .root "context" "push") }}
  allowed_hosts:
    - {{ $push | quote }}
    - {{ printf "%s.%s.svc" $push .root.Release.Namespace | quote }}
    - {{ printf "%s.%s.svc.cluster.local" $push .root.Release.Namespace | quote }}
    {{- range $c.pushGatewayHosts }}
    - {{ . | quote }}
    {{- end }}
  allow_http: true
  allow_private: true
media:
  url: http://127.0.0.1:8090
log:
  level: {{ $c.log.level }}
  format: {{ $c.log.format }}
{{- end -}}

{{- /* atoll.homeserver.mediaConfig: the atoll-media sidecar config file. */ -}}
{{- define "atoll.homeserver.mediaConfig" -}}
{{- $m := .root.Values.media -}}
{{- $s3 := .root.Values.global.s3 -}}
listen: ":8090"
metrics_listen: ":9091"
homeserver_url: http://127.0.0.1:8081
homeserver_token_file: /etc/atoll/credentials/admin-token
max_upload_bytes: {{ int64 $m.maxUploadBytes }}
database:
  url_file: /etc/atoll/credentials/database-url
s3:
  endpoint: {{ ternary (printf "%s:9000" (include "atoll.lib.names.host" (dict "root" .root "context" "minio"))) $s3.endpoint $s3.inCluster | quote }}
  secure: {{ and (not $s3.inCluster) $s3.secure }}
  region: {{ $s3.region | quote }}
  access_key_file: /etc/atoll/credentials/s3-access-key
  secret_key_file: /etc/atoll/credentials/s3-secret-key
  bucket_mode: {{ $m.bucketMode }}
  bucket_prefix: {{ $m.bucketPrefix | quote }}
  shared_bucket: {{ $m.sharedBucket | quote }}
{{- end -}}

{{- /* atoll.homeserver.routeHosts: the wildcard host and the tenant hosts of an ingress or route block, one per line. */ -}}
{{- define "atoll.homeserver.routeHosts" -}}
{{- if .context.host }}
{{ .context.host }}
{{- end }}
{{- range .context.tenantHosts }}
{{ . }}
{{- end }}
{{- end -}}

{{- /* atoll.homeserver.mediaPaths: path prefixes served by the media sidecar. */ -}}
{{- define "atoll.homeserver.mediaPaths" -}}
["/_matrix/media/", "/_matrix/client/v1/media/", "/_matrix/federation/v1/media/"]
{{- end -}}
