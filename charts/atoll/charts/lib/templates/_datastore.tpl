{{- /*
atoll.lib.datastore.statefulSet: a single-replica StatefulSet with one PVC for an in-cluster datastore.
context: {component, port, args, env (list), dataPath, extraMounts (list), extraVolumes (list), probe (probe body)}.
*/ -}}
{{- define "atoll.lib.datastore.statefulSet" -}}
{{- $v := .root.Values -}}
{{- $name := include "atoll.lib.names.fullname" (dict "root" .root "context" .context.component) -}}
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {{ $name }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "atoll.lib.labels.common" (dict "root" .root "context" .context.component) | nindent 4 }}
spec:
  serviceName: {{ $name }}
  replicas: 1
  selector:
    matchLabels:
      {{- include "atoll.lib.labels.selector" (dict "root" .root "context" .context.component) | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "atoll.lib.labels.pod" (dict "root" .root "context" .context.component) | nindent 8 }}
    spec:
      {{- include "atoll.lib.pods.common" (dict "root" .root "context" (dict "component" .context.component "values" $v)) | nindent 6 }}
      containers:
        - name: {{ .context.component }}
          {{- include "atoll.lib.images.container" (dict "root" .root "context" $v.image) | nindent 10 }}
          {{- with .context.args }}
          args:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with .context.env }}
          env:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          ports:
            - {name: {{ .context.portName }}, containerPort: {{ .context.port }}, protocol: TCP}
          readinessProbe:
            {{- toYaml .context.probe | nindent 12 }}
            periodSeconds: 5
          livenessProbe:
            {{- toYaml .context.probe | nindent 12 }}
            initialDelaySeconds: 15
            periodSeconds: 10
            failureThreshold: 6
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            {{- include "atoll.lib.security.container" . | nindent 12 }}
          volumeMounts:
            - {name: data, mountPath: {{ .context.dataPath }}}
            - {name: tmp, mountPath: /tmp}
            {{- with .context.extraMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        {{- include "atoll.lib.pods.tmpVolume" . | nindent 8 }}
        {{- with .context.extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumeClaimTemplates:
    - metadata:
        name: data
        labels:
          {{- include "atoll.lib.labels.selector" (dict "root" .root "context" .context.component) | nindent 10 }}
      spec:
        accessModes: [ReadWriteOnce]
        {{- with $v.persistence.storageClassName }}
        storageClassName: {{ . }}
        {{- end }}
        resources:
          requests:
            storage: {{ $v.persistence.size }}
{{- end -}}

{{- /* atoll.lib.datastore.service: the Service of an in-cluster datastore. context: {component, port, portName}. */ -}}
{{- define "atoll.lib.datastore.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "atoll.lib.names.fullname" (dict "root" .root "context" .context.component) }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "atoll.lib.labels.common" (dict "root" .root "context" .context.component) | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "atoll.lib.labels.selector" (dict "root" .root "context" .context.component) | nindent 4 }}
  ports:
    - {name: {{ .context.portName }}, port: {{ .context.port }}, targetPort: {{ .context.portName }}, protocol: TCP}
{{- end -}}
