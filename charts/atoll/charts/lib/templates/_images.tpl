{{- /*
atoll.lib.images.ref: the image reference of an image block (context: {registry, repository, tag, digest}).
global.imageRegistry wins over image.registry; a digest wins over the tag; the tag defaults to the chart's appVersion.
*/ -}}
{{- define "atoll.lib.images.ref" -}}
{{- $registry := .root.Values.global.imageRegistry | default .context.registry -}}
{{- $name := .context.repository -}}
{{- if $registry }}{{ $name = printf "%s/%s" (trimSuffix "/" $registry) .context.repository }}{{ end -}}
{{- if .context.digest -}}
{{- printf "%s@%s" $name .context.digest -}}
{{- else -}}
{{- $tag := .context.tag | default .root.Chart.AppVersion -}}
{{- if eq $tag "latest" }}{{ fail (printf "image %s: the tag latest is not allowed; set a version or a digest" .context.repository) }}{{ end -}}
{{- printf "%s:%s" $name $tag -}}
{{- end -}}
{{- end -}}

{{- /* atoll.lib.images.container: image and imagePullPolicy lines of a container. context: image block. */ -}}
{{- define "atoll.lib.images.container" -}}
image: {{ include "atoll.lib.images.ref" . | quote }}
imagePullPolicy: {{ .context.pullPolicy | default "IfNotPresent" }}
{{- end -}}

{{- /* atoll.lib.images.pullSecrets: imagePullSecrets of a pod from global.imagePullSecrets. context: unused. */ -}}
{{- define "atoll.lib.images.pullSecrets" -}}
{{- with .root.Values.global.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . | quote }}
{{- end }}
{{- end }}
{{- end -}}
