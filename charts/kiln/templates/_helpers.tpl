{{/* The chart's name, and the release's full name (63 characters at most, DNS-1123). */}}
{{- define "kiln.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kiln.fullname" -}}
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

{{/* Cluster-scoped objects (ClusterRole, webhook configurations) are named per release and namespace,
     so that installs in several namespaces never clash. */}}
{{- define "kiln.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "kiln.fullname" .) }}
{{- end }}

{{- define "kiln.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "kiln.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: kiln
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "kiln.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kiln.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kiln.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kiln.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "kiln.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "kiln.webhookServiceName" -}}
{{- printf "%s-webhook" (include "kiln.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kiln.leaseName" -}}
{{- printf "%s-leader" (include "kiln.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kiln.metricsServiceName" -}}
{{- printf "%s-metrics" (include "kiln.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The labels of the metrics Service, which the ServiceMonitor selects (not the webhook Service). */}}
{{- define "kiln.metricsServiceSelectorLabels" -}}
{{ include "kiln.selectorLabels" . }}
kiln.dev/metrics: "true"
{{- end }}

{{/* The ports the container listens on must differ. */}}
{{- define "kiln.checkPorts" -}}
{{- $ports := dict "liveness.port" .Values.liveness.port }}
{{- if .Values.webhooks.enabled }}
{{- $_ := set $ports "webhooks.port" .Values.webhooks.port }}
{{- end }}
{{- if .Values.metrics.enabled }}
{{- $_ := set $ports "metrics.port" .Values.metrics.port }}
{{- if .Values.webhooks.enabled }}
{{- $_ := set $ports "metrics.webhookPort" .Values.metrics.webhookPort }}
{{- end }}
{{- end }}
{{- $seen := dict }}
{{- range $key := keys $ports | sortAlpha }}
{{- $port := toString (get $ports $key) }}
{{- if hasKey $seen $port }}
{{- fail (printf "%s and %s are both %s: the container's ports must differ" (get $seen $port) $key $port) }}
{{- end }}
{{- $_ := set $seen $port $key }}
{{- end }}
{{- end }}

{{- define "kiln.webhookSecretName" -}}
{{- printf "%s-webhook-tls" (include "kiln.fullname" .) }}
{{- end }}

{{- define "kiln.webhookCertificateName" -}}
{{- printf "%s-webhook" (include "kiln.fullname" .) }}
{{- end }}

{{/*
The webhooks' CA, certificate and key when the chart makes them (certManager.enabled=false), as the
Secret's base64 data (ca.crt, tls.crt, tls.key). An existing Secret is reused (lookup), so upgrades
keep the certificate; otherwise a CA and a certificate for the webhook Service are generated. The
result is computed once per render (memoised in .Values), so that the Secret, the webhook
configurations' caBundle and the Deployment's checksum agree.
*/}}
{{- define "kiln.webhookTLS" -}}
{{- if not (hasKey .Values "__kilnWebhookTLS") }}
{{- $secret := lookup "v1" "Secret" .Release.Namespace (include "kiln.webhookSecretName" .) }}
{{- $data := dict }}
{{- if $secret }}
{{- $data = pick ($secret.data | default dict) "ca.crt" "tls.crt" "tls.key" }}
{{- end }}
{{- if not (and (get $data "ca.crt") (get $data "tls.crt") (get $data "tls.key")) }}
{{- $svc := include "kiln.webhookServiceName" . }}
{{- $ns := .Release.Namespace }}
{{- $days := int .Values.webhookCert.validityDays }}
{{- $ca := genCA (printf "%s-webhook-ca" (include "kiln.fullname" .)) $days }}
{{- $dns := list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) }}
{{- $cert := genSignedCert (printf "%s.%s.svc" $svc $ns) nil $dns $days $ca }}
{{- $data = dict "ca.crt" ($ca.Cert | b64enc) "tls.crt" ($cert.Cert | b64enc) "tls.key" ($cert.Key | b64enc) }}
{{- end }}
{{- $_ := set .Values "__kilnWebhookTLS" $data }}
{{- end }}
{{- toJson (get .Values "__kilnWebhookTLS") }}
{{- end }}

{{/* The client config of one webhook: the Service, a path, and the caBundle unless cert-manager injects it. */}}
{{- define "kiln.webhookClientConfig" -}}
{{- $ := index . 0 }}
clientConfig:
  service:
    name: {{ include "kiln.webhookServiceName" $ }}
    namespace: {{ $.Release.Namespace }}
    port: 443
    path: {{ index . 1 }}
  {{- if not $.Values.certManager.enabled }}
  caBundle: {{ get (include "kiln.webhookTLS" $ | fromJson) "ca.crt" }}
  {{- end }}
{{- if $.Values.webhooks.namespaceSelector }}
namespaceSelector:
  {{- toYaml $.Values.webhooks.namespaceSelector | nindent 2 }}
{{- else if $.Values.watchNamespaces }}
namespaceSelector:
  matchExpressions:
    - key: kubernetes.io/metadata.name
      operator: In
      values:
        {{- toYaml $.Values.watchNamespaces | nindent 8 }}
{{- end }}
{{- end }}

{{/*
The operator's rights to namespaced objects: in a ClusterRole for a cluster-wide install, in a Role per
namespace with watchNamespaces.
*/}}
{{- define "kiln.namespacedRules" -}}
# Its own kinds: kopf lists, watches and patches them (annotations, finalizers); the reconcilers
# and the webhooks read them; a Workload with an inline artifact creates the Draft Artifact.
- apiGroups: ["kiln.dev"]
  resources: ["artifacts"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["kiln.dev"]
  resources: ["workloads", "deployments"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["kiln.dev"]
  resources: ["artifacts/status", "workloads/status", "deployments/status"]
  verbs: ["patch"]
# Governed Deployments' approvals: the operator reacts to new Approvals and reads them, and the
# namespace's ApprovalPolicy "default", to decide a change waiting for them.
- apiGroups: ["kiln.dev"]
  resources: ["approvals"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["kiln.dev"]
  resources: ["approvalpolicies"]
  verbs: ["get"]
# Kiln's own verb: the status policy (admissionpolicies.yaml) lets only those who may `reconcile` its
# kinds (in the object's namespace) write their status.
- apiGroups: ["kiln.dev"]
  resources: ["artifacts", "workloads", "deployments"]
  verbs: ["reconcile"]
# Children carry blockOwnerDeletion ownerReferences: clusters that enforce owner references
# (OwnerReferencesPermissionEnforcement) require this on the owners.
- apiGroups: ["kiln.dev"]
  resources: ["workloads/finalizers", "deployments/finalizers"]
  verbs: ["update"]
# The children: a Workload's pods (created and deleted one by one) and the Services of Workloads and
# Deployments; both listed, watched and indexed by the operator (get: an index entry no watch event
# has confirmed after start-up is checked once).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# kopf posts Events (kopf.info / kopf.warn).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# A governed Deployment's apps/v1 Deployment (watched for rollouts; hand edits are replaced).
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "update"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "create", "patch", "delete"]
{{- if .Values.registration.readImagePullSecrets }}
# Registration resolves image digests with the image pull secrets an Artifact names; the webhook
# first checks (SubjectAccessReview) that whoever registers may read them.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end }}
{{- end }}

{{/* registration.registryMirrors as KILN_REGISTRY_MIRRORS: registry=url,registry=url (sorted) */}}
{{- define "kiln.mirrors" -}}
{{- $out := list -}}
{{- range $registry, $url := . -}}
{{- $out = append $out (printf "%s=%s" $registry $url) -}}
{{- end -}}
{{- join "," $out -}}
{{- end -}}
