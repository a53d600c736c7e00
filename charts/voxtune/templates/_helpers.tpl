{{/* Chart name, or nameOverride. */}}
{{- define "voxtune.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Prefix of every resource name: the release name, plus the chart name unless it has it. */}}
{{- define "voxtune.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "voxtune.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Recommended labels; each template adds its app.kubernetes.io/component. */}}
{{- define "voxtune.labels" -}}
helm.sh/chart: {{ include "voxtune.chart" . }}
{{ include "voxtune.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: voxtune
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "voxtune.selectorLabels" -}}
app.kubernetes.io/name: {{ include "voxtune.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* ServiceAccount of a component: (dict "root" $ "component" "controller"|"ui"|"jobs"). */}}
{{- define "voxtune.serviceAccountName" -}}
{{- $account := index .root.Values .component "serviceAccount" }}
{{- if $account.create }}
{{- default (printf "%s-%s" (include "voxtune.fullname" .root) .component) $account.name }}
{{- else }}
{{- default "default" $account.name }}
{{- end }}
{{- end }}

{{/* An image's parts with the chart-wide fallbacks, as YAML (the controller's JobSettings
     take them as they are): (dict "root" $ "image" .Values.images.train). */}}
{{- define "voxtune.imageParts" -}}
registry: {{ default .root.Values.image.registry .image.registry | quote }}
repository: {{ .image.repository | quote }}
tag: {{ default (default .root.Chart.AppVersion .root.Values.image.tag) .image.tag | quote }}
{{- with .image.digest }}
digest: {{ . | quote }}
{{- end }}
{{- end }}

{{/* Image reference, formed like JobSettings' Image.reference: (dict "root" $ "image" …). */}}
{{- define "voxtune.image" -}}
{{- $image := include "voxtune.imageParts" . | fromYaml }}
{{- $where := $image.repository }}
{{- if $image.registry }}
{{- $where = printf "%s/%s" $image.registry $image.repository }}
{{- end }}
{{- if $image.digest }}
{{- printf "%s@%s" $where $image.digest }}
{{- else }}
{{- printf "%s:%s" $where $image.tag }}
{{- end }}
{{- end }}

{{- define "voxtune.claimName" -}}
{{- default (printf "%s-data" (include "voxtune.fullname" .)) .Values.persistence.existingClaim }}
{{- end }}

{{/* Hardened pod and container security contexts (the restricted Pod Security Standard). */}}
{{- define "voxtune.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.user }}
runAsGroup: {{ .Values.securityContext.user }}
fsGroup: {{ .Values.securityContext.user }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "voxtune.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
{{- end }}

{{- define "voxtune.imagePullSecrets" -}}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end }}

{{/* Environment shared by the pods that use the volume and the Hugging Face cache. */}}
{{- define "voxtune.dataEnv" -}}
- name: VOXTUNE_HOME
  value: /data
- name: HF_HOME
  value: /data/hf-cache
- name: HOME
  value: /tmp
- name: PYTHONUNBUFFERED
  value: "1"
{{- if .Values.huggingface.offline }}
- name: HF_HUB_OFFLINE
  value: "1"
{{- end }}
{{- end }}

{{/* The shared volume and a writable /tmp (the root filesystem is read-only). */}}
{{- define "voxtune.dataVolumes" -}}
- name: data
  persistentVolumeClaim:
    claimName: {{ include "voxtune.claimName" . }}
- name: tmp
  emptyDir: {}
{{- end }}

{{- define "voxtune.dataMounts" -}}
- name: data
  mountPath: /data
- name: tmp
  mountPath: /tmp
{{- end }}

{{/* The controller's settings (a JobSettings YAML): what it stamps into every step Job. */}}
{{- define "voxtune.jobSettings" -}}
{{- $jobs := .Values.jobs }}
{{- if and (has $jobs.engine (list "jobset" "trainjob")) (not (has "ReadWriteMany" .Values.persistence.accessModes)) }}
{{- fail (printf "jobs.engine %s runs training on several nodes, which all mount the run folder: persistence.accessModes must include ReadWriteMany (see docs/operations.md)" $jobs.engine) }}
{{- end }}
{{- $images := dict }}
{{- range $step := list "prepare" "train" "publish" }}
{{- $_ := set $images $step (include "voxtune.imageParts" (dict "root" $ "image" (index $.Values.images $step)) | fromYaml) }}
{{- end }}
{{- $env := deepCopy $jobs.env }}
{{- if .Values.huggingface.offline }}
{{- $_ := set $env "HF_HUB_OFFLINE" "1" }}
{{- end }}
{{- $profiles := list }}
{{- range $jobs.gpuProfiles }}
{{- $profiles = append $profiles (dict "name" .name "memory_gib" .memoryGiB "product" (.product | default "") "gpus_per_node" (.gpusPerNode | default 8)) }}
{{- end }}
{{- $settings := dict
  "images" $images
  "image_pull_policy" .Values.image.pullPolicy
  "image_pull_secrets" .Values.image.pullSecrets
  "pvc" (include "voxtune.claimName" .)
  "service_account" (include "voxtune.serviceAccountName" (dict "root" . "component" "jobs"))
  "hf_token_key" .Values.huggingface.key
  "hf_space_token_key" .Values.huggingface.spaceToken.key
  "resources" (dict "prepare" $jobs.resources.prepare "train_lora" $jobs.resources.trainLora
                    "train_full" $jobs.resources.trainFull "publish" $jobs.resources.publish)
  "node_selector" $jobs.nodeSelector
  "tolerations" $jobs.tolerations
  "gpu_node_selector" $jobs.gpuNodeSelector
  "gpu_tolerations" $jobs.gpuTolerations
  "gpu_profiles" $profiles
  "checkpoint_write_mb_per_s" $jobs.checkpointWriteMBps
  "max_termination_grace_seconds" $jobs.maxTerminationGraceSeconds
  "backoff_limit" $jobs.backoffLimit
  "engine" $jobs.engine
  "trainjob_runtime" $jobs.trainingRuntime
  "volume_access_modes" .Values.persistence.accessModes
  "deadlines" $jobs.deadlines
  "ttl_seconds_after_finished" $jobs.ttlSecondsAfterFinished
  "shm_size" $jobs.shmSize
  "user_id" .Values.securityContext.user
  "env" $env }}
{{- with .Values.huggingface.existingSecret }}
{{- $_ := set $settings "hf_token_secret" . }}
{{- end }}
{{- with .Values.huggingface.spaceToken.existingSecret }}
{{- $_ := set $settings "hf_space_token_secret" . }}
{{- end }}
{{- with $jobs.priorityClassName }}
{{- $_ := set $settings "priority_class" . }}
{{- end }}
{{- with $jobs.queue }}
{{- $_ := set $settings "queue" . }}
{{- end }}
{{- toYaml $settings }}
{{- end }}

{{/* The vLLM demo's entrypoint: reads the published model's vllm.json (voxtune/publish/vllm.py)
and execs `vllm serve` on the folder (merged or full weights, in Mistral's layout beside
transformers') or on the base with the language model's adapter, named as demo.model either way,
with the flags vllm.json names. Arguments: folder, name, port, extra args. */}}
{{- define "voxtune.vllmLauncher" -}}
import json, os, sys
folder, name, port, *extra = sys.argv[1:]
with open(os.path.join(folder, "vllm.json")) as manifest:
    plan = json.load(manifest)
if "args" not in plan:
    sys.exit("voxtune: " + folder + " was published before voxtune wrote what vLLM loads "
             "(Mistral's layout, vLLM's adapter names): publish the run again")
if plan["note"]:
    print("voxtune:", plan["note"], flush=True)
command = ["vllm", "serve"]
if plan["adapter"]:
    adapter = os.path.join(folder, plan["adapter"])
    with open(os.path.join(adapter, "adapter_config.json")) as config:
        rank = json.load(config)["r"]
    command += [plan["model"], "--enable-lora", "--max-lora-rank", str(rank),
                "--lora-modules", name + "=" + adapter, "--served-model-name", plan["model"]]
else:
    command += [folder, "--served-model-name", name]
command += ["--host", "0.0.0.0", "--port", port, "--dtype", plan["dtype"], *plan["args"], *extra]
print("voxtune:", " ".join(command), flush=True)
os.execvp(command[0], command)
{{- end }}
