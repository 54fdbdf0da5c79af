{{- /* atoll.lib.security.pod: hardened pod securityContext (uid/gid 65532). context: unused. */ -}}
{{- define "atoll.lib.security.pod" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- /* atoll.lib.security.container: hardened container securityContext. context: unused. */ -}}
{{- define "atoll.lib.security.container" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
