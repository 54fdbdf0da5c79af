{{- /* atoll.lib.pods.common: pod spec lines shared by every workload. context: {component, values} with values the component's section. */ -}}
{{- define "atoll.lib.pods.common" -}}
automountServiceAccountToken: false
serviceAccountName: {{ include "atoll.lib.names.fullname" (dict "root" .root "context" .context.component) }}
securityContext:
  {{- include "atoll.lib.security.pod" . | nindent 2 }}
{{- include "atoll.lib.images.pullSecrets" . }}
{{- with .context.values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .context.values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
topologySpreadConstraints:
{{- if .context.values.topologySpreadConstraints }}
  {{- toYaml .context.values.topologySpreadConstraints | nindent 2 }}
{{- else }}
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "atoll.lib.labels.selector" (dict "root" .root "context" .context.component) | nindent 8 }}
{{- end }}
{{- end -}}

{{- /* atoll.lib.pods.serviceAccount: a ServiceAccount without token automount. context: component name. */ -}}
{{- define "atoll.lib.pods.serviceAccount" -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "atoll.lib.names.fullname" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "atoll.lib.labels.common" . | nindent 4 }}
automountServiceAccountToken: false
{{- end -}}

{{- /* atoll.lib.pods.pdb: a PodDisruptionBudget. context: {component, maxUnavailable}. */ -}}
{{- define "atoll.lib.pods.pdb" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "atoll.lib.names.fullname" (dict "root" .root "context" .context.component) }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "atoll.lib.labels.common" (dict "root" .root "context" .context.component) | nindent 4 }}
spec:
  maxUnavailable: {{ .context.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "atoll.lib.labels.selector" (dict "root" .root "context" .context.component) | nindent 6 }}
{{- end -}}

{{- /*
atoll.lib.pods.networkPolicy: ingress-only NetworkPolicy. context: {component, public: [ports open to all], internal: [ports open to this release's pods]}.
*/ -}}
{{- define "atoll.lib.pods.networkPolicy" -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "atoll.lib.names.fullname" (dict "root" .root "context" .context.component) }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "atoll.lib.labels.common" (dict "root" .root "context" .context.component) | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "atoll.lib.labels.selector" (dict "root" .root "context" .context.component) | nindent 6 }}
  policyTypes: [Ingress]
  ingress:
    {{- if .context.public }}
    - ports:
        {{- range .context.public }}
        - port: {{ . }}
          protocol: TCP
        {{- end }}
    {{- end }}
    {{- if .context.internal }}
    - from:
        - podSelector:
            matchLabels:
              app.kubernetes.io/instance: {{ .root.Release.Name }}
      ports:
        {{- range .context.internal }}
        - port: {{ . }}
          protocol: TCP
        {{- end }}
    {{- end }}
{{- end -}}

{{- /* atoll.lib.pods.serviceMonitor: a ServiceMonitor when the monitoring.coreos.com/v1 API exists. context: {component, port}. */ -}}
{{- define "atoll.lib.pods.serviceMonitor" -}}
{{- if .root.Capabilities.APIVersions.Has "monitoring.coreos.com/v1" -}}
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ include "atoll.lib.names.fullname" (dict "root" .root "context" .context.component) }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "atoll.lib.labels.common" (dict "root" .root "context" .context.component) | nindent 4 }}
spec:
  selector:
    matchLabels:
      {{- include "atoll.lib.labels.selector" (dict "root" .root "context" .context.component) | nindent 6 }}
  endpoints:
    {{- range .context.ports }}
    - port: {{ . }}
      path: /metrics
      interval: 30s
    {{- end }}
{{- end -}}
{{- end -}}

{{- /* atoll.lib.pods.tmpVolume: an emptyDir for /tmp (the root filesystem is read-only). context: unused. */ -}}
{{- define "atoll.lib.pods.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
{{- end -}}
