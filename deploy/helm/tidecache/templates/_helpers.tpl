{{/*
Object names are fixed, not derived from the release name: the operator finds its Lease, its
webhook Service, Secret and configuration by these defaults, binds cache pods to the ClusterRole
tidecache-cache-node by a name compiled into it, and watches every namespace, so one
installation per cluster is all that can work.
*/}}

{{/*
The labels of every object the chart renders: the two deploy/ puts on each (pass the component
as "component"), and Helm's own three. tests/tests/helm.rs removes exactly those three before
comparing with `kubectl kustomize deploy/`; pod templates and selectors carry only the first two,
so a chart upgrade alone does not restart the operator.
*/}}
{{- define "tidecache.labels" -}}
app.kubernetes.io/name: tidecache
app.kubernetes.io/component: {{ .component }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end }}

{{/* What selects the operator's pods (Deployment, Services, PodMonitor). */}}
{{- define "tidecache.operatorSelector" -}}
app.kubernetes.io/name: tidecache
app.kubernetes.io/component: operator
{{- end }}

{{/* The webhook's Service, whose DNS names its serving certificate is for. */}}
{{- define "tidecache.webhookService" -}}
tidecache-operator-webhook
{{- end }}

{{/*
Refuses webhook settings that contradict each other, rather than ignoring one of them: in
self-signed mode the operator owns the CA bundle, and cert-manager needs its CRDs to write the
Secret the webhook serves from (without it, every CacheCluster apply would fail closed).
*/}}
{{- define "tidecache.checkWebhook" -}}
{{- $webhook := .Values.webhook }}
{{- if eq $webhook.certificates "self-signed" }}
{{- if $webhook.certManager.enabled }}
{{- fail "webhook.certManager.enabled needs webhook.certificates=secret (in self-signed mode the operator issues the certificate itself)" }}
{{- end }}
{{- if $webhook.caBundle }}
{{- fail "webhook.caBundle needs webhook.certificates=secret (in self-signed mode the operator writes the CA bundle itself)" }}
{{- end }}
{{- else if $webhook.certManager.enabled }}
{{- if $webhook.caBundle }}
{{- fail "webhook.caBundle and webhook.certManager.enabled exclude each other: cert-manager's cainjector writes the CA bundle" }}
{{- end }}
{{- if not (.Capabilities.APIVersions.Has "cert-manager.io/v1") }}
{{- fail "webhook.certManager.enabled: the cluster does not serve cert-manager.io/v1 (install cert-manager first; for helm template pass --api-versions cert-manager.io/v1)" }}
{{- end }}
{{- end }}
{{- end }}
