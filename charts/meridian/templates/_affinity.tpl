{{/*
Control plane affinity: `controlPlane.affinity` when set, else anti-affinity between replicas
(`controlPlane.podAntiAffinity`), so one node going away does not take every replica with it.
*/}}
{{- define "meridian.controlPlane.affinity" -}}
{{- $cp := .Values.controlPlane -}}
{{- $anti := $cp.podAntiAffinity -}}
{{- if $cp.affinity -}}
{{- toYaml $cp.affinity }}
{{- else if eq $anti.type "preferred" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: {{ $anti.weight }}
      podAffinityTerm:
        topologyKey: {{ $anti.topologyKey }}
        labelSelector:
          matchLabels:
            {{- include "meridian.controlPlane.selectorLabels" . | nindent 12 }}
{{- else if eq $anti.type "required" -}}
podAntiAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: {{ $anti.topologyKey }}
      labelSelector:
        matchLabels:
          {{- include "meridian.controlPlane.selectorLabels" . | nindent 10 }}
{{- end }}
{{- end }}
