{{/* Names and labels shared by every template. */}}

{{- define "mtm.labels" -}}
app.kubernetes.io/name: mtm
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
app.kubernetes.io/part-of: mtm
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end }}

{{- define "mtm.selector" -}}
app.kubernetes.io/name: mtm
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- end }}

{{- define "mtm.secretName" -}}
{{ .Release.Name }}-secrets
{{- end }}

{{- define "mtm.natsUrl" -}}
{{ .Values.nats.url | default (printf "tls://%s-nats:4222" .Release.Name) }}
{{- end }}

{{/* The CloudNativePG cluster of a component: `<release>-<component>-db`. */}}
{{- define "mtm.dbCluster" -}}
{{ .root.Release.Name }}-{{ .name }}-db
{{- end }}

{{/* The NATS servers' pods, as the official chart labels them. */}}
{{- define "mtm.natsSelector" -}}
app.kubernetes.io/name: nats
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
