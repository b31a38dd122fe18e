{{/*
Names. The base name is kept to 28 characters so that every derived KubeRay name stays within the
operator's limits (RayService and RayJob <= 47, RayCluster <= 53, DNS-1035 labels).
*/}}
{{- define "xalign.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 28 | trimSuffix "-" }}
{{- end }}

{{- define "xalign.fullname" -}}
{{- $full := .Values.fullnameOverride }}
{{- if not $full }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- $full = ternary .Release.Name (printf "%s-%s" .Release.Name $name) (contains $name .Release.Name) }}
{{- end }}
{{- /* Release names may hold dots; KubeRay names are DNS-1035 labels. */}}
{{- $full | replace "." "-" | trunc 28 | trimSuffix "-" }}
{{- end }}

{{- define "xalign.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* A KubeRay object name, checked against the operator's rules before anything is applied. */}}
{{- define "xalign.crName" -}}
{{- $name := .name }}
{{- if or (gt (len $name) (int .max)) (not (regexMatch "^[a-z]([-a-z0-9]*[a-z0-9])?$" $name)) }}
{{- fail (printf "%s name %q must be a DNS-1035 label of at most %d characters: shorten fullnameOverride or the runId" .kind $name (int .max)) }}
{{- end }}
{{- $name }}
{{- end }}

{{- define "xalign.rayClusterName" -}}
{{- include "xalign.crName" (dict "kind" "RayCluster" "max" 53 "name" (include "xalign.fullname" .)) }}
{{- end }}

{{- define "xalign.rayServiceName" -}}
{{- include "xalign.crName" (dict "kind" "RayService" "max" 47 "name" (printf "%s-serve" (include "xalign.fullname" .))) }}
{{- end }}

{{- define "xalign.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "xalign.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "xalign.secretName" -}}
{{- if .Values.secrets.existingSecret }}
{{- .Values.secrets.existingSecret }}
{{- else if .Values.secrets.create }}
{{- printf "%s-secrets" (include "xalign.fullname" .) }}
{{- end }}
{{- end }}

{{- define "xalign.claimName" -}}
{{- default (printf "%s-storage" (include "xalign.fullname" .)) .Values.storage.pvc.existingClaim }}
{{- end }}

{{/*
Object storage (storage.kind: s3). The schema already refuses an s3 store without a bucket or credentials
Secret; this check repeats it for renders that skip schema validation.
*/}}
{{- define "xalign.checkStorage" -}}
{{- $s := .Values.storage }}
{{- if eq $s.kind "s3" }}
{{- if not $s.s3.bucket }}
{{- fail "storage.s3.bucket is required when storage.kind is s3" }}
{{- end }}
{{- if not $s.s3.credentialsSecret }}
{{- fail "storage.s3.credentialsSecret is required when storage.kind is s3: the name of an existing Secret with the access key id and secret access key" }}
{{- end }}
{{- else if ne $s.kind "claim" }}
{{- fail (printf "storage.kind must be claim or s3, not %q" $s.kind) }}
{{- end }}
{{- end }}

{{/* The artifacts root with storage.kind s3: s3://<bucket>[/<prefix>] (XALIGN_ARTIFACTS). */}}
{{- define "xalign.artifactsUri" -}}
{{- include "xalign.checkStorage" . }}
{{- $s3 := .Values.storage.s3 }}
{{- $prefix := trimAll "/" $s3.prefix }}
{{- if $prefix }}
{{- printf "s3://%s/%s" $s3.bucket $prefix }}
{{- else }}
{{- printf "s3://%s" $s3.bucket }}
{{- end }}
{{- end }}

{{/*
An artifact folder the chart passes to xalign (--output, --resume). With storage.kind s3, a path relative to
the working directory (or under storage.mountPath) means the same place under XALIGN_ARTIFACTS, so it becomes
that URI; URIs and other absolute paths stay as given. With a claim the path is unchanged. Context: root, path.
*/}}
{{- define "xalign.artifactPath" -}}
{{- $v := .root.Values }}
{{- $p := toString .path }}
{{- $mount := printf "%s/" (trimSuffix "/" $v.storage.mountPath) }}
{{- $path := printf "%s/" (trimSuffix "/" $p) }}
{{- if and (eq $v.storage.kind "s3") (not (regexMatch "^[a-z][a-z0-9+.-]*://" $p)) (or (hasPrefix $mount $path) (not (hasPrefix "/" $p))) }}
{{- $rel := trimSuffix "/" (regexReplaceAll "^(\\./)+" (trimPrefix $mount $path) "") }}
{{- if or (eq $rel "") (eq $rel ".") }}
{{- include "xalign.artifactsUri" .root }}
{{- else }}
{{- printf "%s/%s" (include "xalign.artifactsUri" .root) $rel }}
{{- end }}
{{- else }}
{{- $p }}
{{- end }}
{{- end }}

{{/*
Environment of the object store (storage.kind s3) for every Ray container and job submitter: the artifacts
URI, the endpoint and region, and the credentials from the existing Secret (never literal values).
*/}}
{{- define "xalign.storageEnv" -}}
{{- $s3 := .Values.storage.s3 -}}
- name: XALIGN_ARTIFACTS
  value: {{ include "xalign.artifactsUri" . | quote }}
{{- with $s3.endpoint }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
- name: AWS_REGION
  value: {{ $s3.region | quote }}
- name: AWS_DEFAULT_REGION
  value: {{ $s3.region | quote }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ $s3.credentialsSecret }}
      key: {{ $s3.accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $s3.credentialsSecret }}
      key: {{ $s3.secretAccessKeyKey }}
{{- end }}

{{/* Labels. `component` is cluster, serve or job-<stage>. */}}
{{- define "xalign.selectorLabels" -}}
app.kubernetes.io/name: {{ include "xalign.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{- define "xalign.labels" -}}
helm.sh/chart: {{ include "xalign.chart" .root }}
{{ include "xalign.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: xalign
{{- end }}

{{- define "xalign.image" -}}
{{- $tag := default (printf "%s-%s" .Chart.AppVersion .Values.image.variant) .Values.image.tag }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}

{{/* Requests = limits (Guaranteed QoS). .res: {cpu, memory, gpu?}; .gpuResourceName for GPU groups. */}}
{{- define "xalign.resources" -}}
{{- $r := dict "cpu" (toString .res.cpu) "memory" (toString .res.memory) }}
{{- if .res.gpu }}
{{- $_ := set $r (default "nvidia.com/gpu" .gpuResourceName) (toString .res.gpu) }}
{{- end -}}
requests:
  {{- toYaml $r | nindent 2 }}
limits:
  {{- toYaml $r | nindent 2 }}
{{- end }}

{{/* Environment of every xalign container (Ray pods and job submitters). */}}
{{- define "xalign.env" -}}
{{- $root := .root }}
{{- $v := $root.Values }}
{{- $cache := printf "%s/%s" $v.storage.mountPath $v.storage.cacheDir -}}
- name: XALIGN_DATA
  value: {{ printf "%s/%s" $v.storage.mountPath $v.storage.dataDir | quote }}
- name: XALIGN_CACHE
  value: {{ $cache | quote }}
- name: HF_HOME
  value: {{ printf "%s/hf" $cache | quote }}
- name: TORCH_EXTENSIONS_DIR
  value: {{ printf "%s/torch_extensions" $cache | quote }}
- name: VLLM_CACHE_ROOT
  value: {{ printf "%s/vllm" $cache | quote }}
- name: TRITON_CACHE_DIR
  value: {{ printf "%s/triton" $cache | quote }}
- name: TORCHINDUCTOR_CACHE_DIR
  value: {{ printf "%s/inductor" $cache | quote }}
{{- if $v.hub.offline }}
- name: HF_HUB_OFFLINE
  value: "1"
{{- end }}
{{- with $v.storage.uri }}
- name: XALIGN_STORAGE_URI
  value: {{ . | quote }}
{{- end }}
{{- if eq $v.storage.kind "s3" }}
{{ include "xalign.storageEnv" $root }}
{{- end }}
{{- with include "xalign.secretName" $root }}
- name: XALIGN_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $v.secrets.apiKeyKey }}
      optional: true
- name: HF_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $v.secrets.hubTokenKey }}
      optional: true
{{- end }}
{{- range $name, $value := $v.env }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- with $v.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Writable places on a read-only root filesystem: /tmp/ray (Ray's session and logs), /tmp, $HOME. */}}
{{- define "xalign.volumeMounts" -}}
- name: ray-logs
  mountPath: /tmp/ray
- name: tmp
  mountPath: /tmp
- name: home
  mountPath: /home/xalign
{{- if .storage }}
{{- $s := .root.Values.storage }}
{{- if eq $s.kind "s3" }}
- name: scratch
  mountPath: {{ $s.mountPath }}
- name: cache
  mountPath: {{ printf "%s/%s" $s.mountPath $s.cacheDir }}
{{- else }}
- name: storage
  mountPath: {{ $s.mountPath }}
{{- end }}
{{- end }}
{{- end }}

{{/* `ray-logs` is the volume name KubeRay itself uses for /tmp/ray, so the autoscaler sidecar shares it. */}}
{{- define "xalign.volumes" -}}
- name: ray-logs
  emptyDir: {}
- name: tmp
  emptyDir: {}
- name: home
  emptyDir: {}
{{- if .storage }}
{{- if eq .root.Values.storage.kind "s3" }}
{{- /* Artifacts live in the bucket: the working directory is node-local scratch, the caches a sized emptyDir. */}}
- name: scratch
  emptyDir: {}
- name: cache
  emptyDir:
    sizeLimit: {{ .root.Values.storage.s3.cacheSize }}
{{- else }}
- name: storage
{{- if .root.Values.storage.pvc.enabled }}
  persistentVolumeClaim:
    claimName: {{ include "xalign.claimName" .root }}
{{- else }}
  emptyDir: {}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Pod-level settings shared by every pod the chart defines. */}}
{{- define "xalign.podCommon" -}}
{{- $v := .root.Values }}
{{- with include "xalign.serviceAccountName" .root -}}
serviceAccountName: {{ . }}
{{ end -}}
securityContext:
  {{- toYaml $v.podSecurityContext | nindent 2 }}
{{- with $v.image.pullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .group.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .group.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .group.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "xalign.podMetadata" -}}
labels:
  {{- include "xalign.labels" (dict "root" .root "component" .component) | nindent 2 }}
  {{- with .root.Values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with .root.Values.podAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
A Ray pod template (head or worker group). Context: root, component, role (head|worker), group (values).
*/}}
{{- define "xalign.rayPodTemplate" -}}
{{- $root := .root }}
{{- $v := $root.Values -}}
metadata:
  {{- include "xalign.podMetadata" . | nindent 2 }}
spec:
  {{- include "xalign.podCommon" . | nindent 2 }}
  {{- /* Only the head needs the API token: the autoscaler sidecar patches the RayCluster. */}}
  automountServiceAccountToken: {{ and (eq .role "head") $v.autoscaling.enabled }}
  containers:
    - name: {{ printf "ray-%s" .role }}
      image: {{ include "xalign.image" $root }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      workingDir: {{ $v.storage.mountPath }}
      {{- if eq .role "head" }}
      ports:
        - name: gcs-server
          containerPort: 6379
        - name: dashboard
          containerPort: 8265
        - name: client
          containerPort: 10001
        - name: serve
          containerPort: 8000
        - name: metrics
          containerPort: 8080
      {{- else }}
      ports:
        - name: serve
          containerPort: 8000
        - name: metrics
          containerPort: 8080
      {{- end }}
      env:
        {{- include "xalign.env" . | nindent 8 }}
      resources:
        {{- include "xalign.resources" (dict "res" .group.resources "gpuResourceName" .group.gpuResourceName) | nindent 8 }}
      securityContext:
        {{- toYaml $v.securityContext | nindent 8 }}
      volumeMounts:
        {{- include "xalign.volumeMounts" (dict "root" $root "storage" true) | nindent 8 }}
  volumes:
    {{- include "xalign.volumes" (dict "root" $root "storage" true) | nindent 4 }}
{{- end }}

{{/* rayStartParams that KubeRay manages itself or rejects. Context: where, params. */}}
{{- define "xalign.checkRayStartParams" -}}
{{- range $key := list "labels" "address" "block" }}
{{- if hasKey $.params $key }}
{{- fail (printf "%s.rayStartParams: %q is set by KubeRay (or rejected by it) and must not be given" $.where $key) }}
{{- end }}
{{- end }}
{{- end }}

{{/* One worker group. Context: root, component, group. */}}
{{- define "xalign.workerGroup" -}}
{{- $g := .group }}
{{- if gt (int $g.minReplicas) (int $g.maxReplicas) }}
{{- fail (printf "workers.%s: minReplicas (%d) must not exceed maxReplicas (%d)" $g.groupName (int $g.minReplicas) (int $g.maxReplicas)) }}
{{- end }}
{{- if or (lt (int $g.replicas) (int $g.minReplicas)) (gt (int $g.replicas) (int $g.maxReplicas)) }}
{{- fail (printf "workers.%s: replicas (%d) must lie between minReplicas (%d) and maxReplicas (%d)" $g.groupName (int $g.replicas) (int $g.minReplicas) (int $g.maxReplicas)) }}
{{- end -}}
{{- include "xalign.checkRayStartParams" (dict "where" (printf "workers.%s" $g.groupName) "params" $g.rayStartParams) -}}
- groupName: {{ $g.groupName }}
  replicas: {{ $g.replicas }}
  minReplicas: {{ $g.minReplicas }}
  maxReplicas: {{ $g.maxReplicas }}
  rayStartParams:
    {{- toYaml $g.rayStartParams | nindent 4 }}
  template:
    {{- include "xalign.rayPodTemplate" (dict "root" .root "component" .component "role" "worker" "group" $g) | nindent 4 }}
{{- end }}

{{/* A RayCluster spec (RayCluster, RayService.rayClusterConfig, RayJob.rayClusterSpec). Context: root, component. */}}
{{- define "xalign.rayClusterSpec" -}}
{{- $root := .root }}
{{- $v := $root.Values }}
{{- if and $v.workers.gpu.enabled (eq $v.workers.gpu.groupName $v.workers.cpu.groupName) }}
{{- fail (printf "workers.cpu.groupName and workers.gpu.groupName must differ (both are %q)" $v.workers.cpu.groupName) }}
{{- end -}}
{{- include "xalign.checkRayStartParams" (dict "where" "head" "params" $v.head.rayStartParams) -}}
rayVersion: {{ $v.ray.version | quote }}
{{- if eq $v.ray.auth.mode "token" }}
authOptions:
  mode: token
{{- end }}
enableInTreeAutoscaling: {{ $v.autoscaling.enabled }}
{{- if $v.autoscaling.enabled }}
autoscalerOptions:
  version: {{ $v.autoscaling.version }}
  upscalingMode: {{ $v.autoscaling.upscalingMode }}
  idleTimeoutSeconds: {{ $v.autoscaling.idleTimeoutSeconds }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  resources:
    {{- include "xalign.resources" (dict "res" $v.autoscaling.resources) | nindent 4 }}
  securityContext:
    {{- toYaml $v.securityContext | nindent 4 }}
  # Its root filesystem is read-only too: /tmp and $HOME from the head pod's emptyDirs (KubeRay adds /tmp/ray).
  volumeMounts:
    - name: tmp
      mountPath: /tmp
    - name: home
      mountPath: /home/xalign
{{- end }}
headGroupSpec:
  rayStartParams:
    {{- toYaml (merge (deepCopy $v.head.rayStartParams) (dict "dashboard-host" "0.0.0.0")) | nindent 4 }}
  template:
    {{- include "xalign.rayPodTemplate" (dict "root" $root "component" .component "role" "head" "group" $v.head) | nindent 4 }}
{{- if or $v.workers.cpu.enabled $v.workers.gpu.enabled }}
workerGroupSpecs:
  {{- if $v.workers.cpu.enabled }}
  {{- include "xalign.workerGroup" (dict "root" $root "component" .component "group" $v.workers.cpu) | nindent 2 }}
  {{- end }}
  {{- if $v.workers.gpu.enabled }}
  {{- include "xalign.workerGroup" (dict "root" $root "component" .component "group" $v.workers.gpu) | nindent 2 }}
  {{- end }}
{{- end }}
{{- end }}

{{/* POSIX shell quoting for one argument of a RayJob entrypoint (run by `ray job submit` through a shell). */}}
{{- define "xalign.shellQuote" -}}
{{- $s := toString . }}
{{- if regexMatch "^[A-Za-z0-9_./:=,@%+-]+$" $s }}
{{- $s }}
{{- else }}
{{- printf "'%s'" (replace "'" "'\\''" $s) }}
{{- end }}
{{- end }}
