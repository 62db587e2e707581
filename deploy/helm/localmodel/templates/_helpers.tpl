{{- define "localmodel.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "localmodel.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "localmodel.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "localmodel.component" -}}
{{- if eq .Values.mode "central" -}}operator{{- else -}}node-agent{{- end -}}
{{- end -}}

{{- define "localmodel.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: {{ include "localmodel.component" . }}
{{- end -}}

{{- define "localmodel.labels" -}}
{{ include "localmodel.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "localmodel.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The pod spec shared by the Deployment (central) and the DaemonSet (node-agent). */}}
{{- define "localmodel.podTemplate" -}}
metadata:
  labels:
    {{- include "localmodel.selectorLabels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    prometheus.io/scrape: "true"
    prometheus.io/port: "8080"
    prometheus.io/path: /metrics
    {{- if eq .Values.mode "central" }}
    checksum/engines: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
    {{- end }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "localmodel.serviceAccountName" . }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- else }}
  {{- if eq .Values.mode "central" }}
  affinity:
    # The standby replica on another node than the leader, when there is one.
    podAntiAffinity:
      preferredDuringSchedulingIgnoredDuringExecution:
        - weight: 100
          podAffinityTerm:
            topologyKey: kubernetes.io/hostname
            labelSelector:
              matchLabels:
                {{- include "localmodel.selectorLabels" . | nindent 16 }}
  {{- end }}
  {{- end }}
  {{- $tolerations := .Values.tolerations }}
  {{- if eq .Values.mode "node-agent" }}
  {{- $tolerations = concat $tolerations .Values.nodeAgent.tolerations }}
  {{- end }}
  {{- with $tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: {{ include "localmodel.component" . }}
      image: {{ include "localmodel.image" . }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args:
        - operator
        - --mode={{ .Values.mode }}
        {{- if eq .Values.mode "node-agent" }}
        - --node-name=$(NODE_NAME)
        - --engine=http://$(NODE_IP):{{ .Values.nodeAgent.enginePort }}
        {{- with .Values.nodeSelector }}
        {{- /* The DaemonSet runs only on these nodes: only they are expected to report. */}}
        - --agent-node-selector={{ range $i, $key := keys . | sortAlpha }}{{ if $i }},{{ end }}{{ $key }}={{ index $.Values.nodeSelector $key }}{{ end }}
        {{- end }}
        {{- end }}
        {{- with .Values.watchNamespace }}
        - --namespace={{ . }}
        {{- end }}
        - --health-addr=:8080
        - --drift-interval={{ .Values.driftInterval }}
      env:
        {{- if eq .Values.mode "central" }}
        - name: LOCALMODEL_ENGINES
          valueFrom:
            configMapKeyRef:
              name: {{ include "localmodel.fullname" . }}-engines
              key: LOCALMODEL_ENGINES
        {{- else }}
        - name: NODE_NAME
          valueFrom:
            fieldRef:
              fieldPath: spec.nodeName
        - name: NODE_IP
          valueFrom:
            fieldRef:
              fieldPath: status.hostIP
        {{- end }}
      ports:
        - name: http
          containerPort: 8080
      livenessProbe:
        httpGet:
          path: /healthz
          port: http
        periodSeconds: 20
        timeoutSeconds: 5
        failureThreshold: 3
      readinessProbe:
        httpGet:
          path: /readyz
          port: http
        periodSeconds: 10
        timeoutSeconds: 5
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: 64Mi
{{- end -}}
