{{/* Chart name, overridable. */}}
{{- define "meridian.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects. Truncated to 55 characters so that "<fullname>-gateway"
still fits the 63-character limit of Service and label names.
*/}}
{{- define "meridian.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 55 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 55 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 55 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "meridian.gatewayName" -}}
{{- printf "%s-gateway" (include "meridian.fullname" .) }}
{{- end }}

{{- define "meridian.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels common to every object. */}}
{{- define "meridian.labels" -}}
helm.sh/chart: {{ include "meridian.chart" . }}
app.kubernetes.io/name: {{ include "meridian.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: meridian
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels. The component label keeps control plane and gateway pods apart, so the
gateway's HPA, PDB and Service never select control plane pods and the other way round.
*/}}
{{- define "meridian.controlPlane.selectorLabels" -}}
app.kubernetes.io/name: {{ include "meridian.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controlplane
{{- end }}

{{- define "meridian.gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "meridian.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end }}

{{- define "meridian.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "meridian.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* DNS name of the control plane Service, as the gateway Envoys resolve it (STRICT_DNS). */}}
{{- define "meridian.xdsHost" -}}
{{- printf "%s-xds.%s.svc.%s" (include "meridian.fullname" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{- define "meridian.controlPlane.image" -}}
{{- $img := .Values.controlPlane.image }}
{{- printf "%s:%s" $img.repository (default .Chart.AppVersion $img.tag) }}
{{- end }}

{{- define "meridian.gateway.image" -}}
{{- printf "%s:%s" .Values.gateway.image.repository .Values.gateway.image.tag }}
{{- end }}

{{/* Lowest listener port: below 1024 the gateway pods need ip_unprivileged_port_start. */}}
{{- define "meridian.lowestListenerPort" -}}
{{- $l := .Values.listeners }}
{{- min (int $l.http) (int $l.https) (int $l.eastWest) }}
{{- end }}

{{/* Names the xDS server certificate covers: the headless xDS Service the gateways resolve, and the
control plane Service, as other clients dial it. */}}
{{- define "meridian.xdsServerNames" -}}
{{- $full := include "meridian.fullname" . -}}
{{- $ns := .Release.Namespace -}}
{{- $names := list (include "meridian.xdsHost" .) $full (printf "%s.%s" $full $ns) (printf "%s.%s.svc" $full $ns) (printf "%s.%s.svc.%s" $full $ns .Values.clusterDomain) -}}
{{- concat $names .Values.xds.extraServerNames | uniq | toJson -}}
{{- end }}

{{- define "meridian.gatewayServiceAccountName" -}}
{{- if .Values.gateway.serviceAccount.create }}
{{- default (include "meridian.gatewayName" .) .Values.gateway.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.gateway.serviceAccount.name }}
{{- end }}
{{- end }}
