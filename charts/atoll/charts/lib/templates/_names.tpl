{{- /* atoll.lib.names.fullname: "<release>-<component>", at most 63 characters. context: component name. */ -}}
{{- define "atoll.lib.names.fullname" -}}
{{- printf "%s-%s" .root.Release.Name .context | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- /* atoll.lib.names.credentialsSecret: the chart-managed Secret holding credentials given inline in values. */ -}}
{{- define "atoll.lib.names.credentialsSecret" -}}
{{- printf "%s-atoll-credentials" .root.Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- /* atoll.lib.names.generatedSecret: the Secret the pre-install hook creates with generated credentials. */ -}}
{{- define "atoll.lib.names.generatedSecret" -}}
{{- printf "%s-atoll-generated" .root.Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- /* atoll.lib.names.host: in-cluster DNS name of a component's Service. context: component name. */ -}}
{{- define "atoll.lib.names.host" -}}
{{- printf "%s.%s.svc" (include "atoll.lib.names.fullname" .) .root.Release.Namespace -}}
{{- end -}}
