{{- /* atoll.lib.labels.common: recommended labels. context: component name. */ -}}
{{- define "atoll.lib.labels.common" -}}
{{ include "atoll.lib.labels.selector" . }}
app.kubernetes.io/part-of: atoll
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 }}
{{- end -}}

{{- /* atoll.lib.labels.selector: labels that select a component's pods. context: component name. */ -}}
{{- define "atoll.lib.labels.selector" -}}
app.kubernetes.io/name: {{ .context }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{- /* atoll.lib.labels.pod: labels of a pod template. No chart version and no app version: an
upgrade that does not change a pod's image or configuration must not restart it (a restarted
datastore takes the shards' database away). context: component name. */ -}}
{{- define "atoll.lib.labels.pod" -}}
{{ include "atoll.lib.labels.selector" . }}
app.kubernetes.io/part-of: atoll
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end -}}
