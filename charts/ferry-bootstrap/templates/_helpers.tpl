{{/*
Helpers of the ferry-bootstrap chart, the only source of the site DNS and LB objects: ferry applies
what `helm template` renders from this chart, so an edit here is an edit of what ferry applies.
Numbers are printed through `int`: helm may hand them over as float64 (1e+06).
*/}}

{{/* The cluster FQDN: clusterFqdn, or k8s-cluster.<domain>. */}}
{{- define "ferry-bootstrap.clusterFqdn" -}}
{{- .Values.clusterFqdn | default (printf "k8s-cluster.%s" .Values.domain) -}}
{{- end -}}

{{/* A name in the domain: (dict "name" N "domain" D). Names already in the domain stay as they are. */}}
{{- define "ferry-bootstrap.qualify" -}}
{{- if or (eq .name .domain) (hasSuffix (printf ".%s" .domain) .name) -}}
{{- .name -}}
{{- else -}}
{{- printf "%s.%s" .name .domain -}}
{{- end -}}
{{- end -}}

{{/* The zones we answer, space-separated: the domain, and the cluster FQDN when it is outside it. */}}
{{- define "ferry-bootstrap.zones" -}}
{{- $fqdn := include "ferry-bootstrap.clusterFqdn" . -}}
{{- $d := .Values.domain -}}
{{- if or (eq $fqdn $d) (hasSuffix (printf ".%s" $d) $fqdn) -}}
{{- $d -}}
{{- else -}}
{{- printf "%s %s" $d $fqdn -}}
{{- end -}}
{{- end -}}

{{- define "ferry-bootstrap.labels" -}}
app.kubernetes.io/name: ferry-bootstrap
app.kubernetes.io/component: {{ . }}
app.kubernetes.io/part-of: ferry
{{- end -}}

{{- define "ferry-bootstrap.selector" -}}
app.kubernetes.io/name: ferry-bootstrap
app.kubernetes.io/component: {{ . }}
{{- end -}}

{{/*
Checks the schema cannot express, here only: ferry hands helm's message on as its own error.
*/}}
{{- define "ferry-bootstrap.checks" -}}
{{- $v := .Values -}}
{{- $problems := list -}}
{{- $names := dict -}}
{{- $ips := dict -}}
{{- $hasServer := false -}}
{{- range $v.nodes -}}
{{- if hasKey $names .name -}}
{{- $problems = append $problems (printf "node name %s appears more than once" .name) -}}
{{- end -}}
{{- $_ := set $names .name .ip -}}
{{- if hasKey $ips .ip -}}
{{- $problems = append $problems (printf "nodes %s and %s have the same IP %s" (get $ips .ip) .name .ip) -}}
{{- else -}}
{{- $_ := set $ips .ip .name -}}
{{- end -}}
{{- if eq .role "server" -}}
{{- $hasServer = true -}}
{{- end -}}
{{- end -}}
{{- if and $v.nodes (not $hasServer) -}}
{{- $problems = append $problems "nodes has no server: at least one node needs role server" -}}
{{- end -}}
{{- $fqdn := include "ferry-bootstrap.clusterFqdn" . -}}
{{- $registry := printf "registry.%s" $v.domain -}}
{{- $reserved := dict $fqdn "the cluster FQDN" -}}
{{- range $v.nodes -}}
{{- $n := include "ferry-bootstrap.qualify" (dict "name" .name "domain" $v.domain) -}}
{{- if eq $n $registry -}}
{{- $problems = append $problems (printf "node %s would answer as %s, which is the site registry name" .name $n) -}}
{{- else if hasKey $reserved $n -}}
{{- $problems = append $problems (printf "node %s would answer as %s, which is %s" .name $n (get $reserved $n)) -}}
{{- end -}}
{{- $_ := set $reserved $n (printf "node %s" .name) -}}
{{- end -}}
{{- if eq $fqdn $registry -}}
{{- $problems = append $problems (printf "clusterFqdn %s is the site registry name" $fqdn) -}}
{{- end -}}
{{- $_ := set $reserved $registry "the site registry name" -}}
{{- range $v.records -}}
{{- $n := include "ferry-bootstrap.qualify" (dict "name" .name "domain" $v.domain) -}}
{{- if hasKey $reserved $n -}}
{{- $problems = append $problems (printf "record %s would answer as %s, which is %s" .name $n (get $reserved $n)) -}}
{{- end -}}
{{- end -}}
{{- if eq (int $v.dns.healthPort) (int $v.dns.readyPort) -}}
{{- $problems = append $problems (printf "dns.healthPort and dns.readyPort are both %d" (int $v.dns.healthPort)) -}}
{{- end -}}
{{- if or (eq (int $v.dns.healthPort) 53) (eq (int $v.dns.readyPort) 53) -}}
{{- $problems = append $problems "dns.healthPort and dns.readyPort must not be 53, the DNS port" -}}
{{- end -}}
{{- if eq (int $v.lb.statsPort) (int $v.apiServerPort) -}}
{{- $problems = append $problems (printf "lb.statsPort and apiServerPort are both %d" (int $v.apiServerPort)) -}}
{{- end -}}
{{- if $problems -}}
{{- fail (printf "invalid bootstrap values:\n  %s" (join "\n  " $problems)) -}}
{{- end -}}
{{- end -}}

{{/* The checksum annotation over a ConfigMap's data (a dict): "key\nvalue" per key, sorted, joined by "\n". */}}
{{- define "ferry-bootstrap.checksum" -}}
{{- $data := . -}}
{{- $parts := list -}}
{{- range $k := keys $data | sortAlpha -}}
{{- $parts = append $parts (printf "%s\n%s" $k (get $data $k)) -}}
{{- end -}}
{{- join "\n" $parts | sha256sum -}}
{{- end -}}

{{/*
The Corefile. CoreDNS expands {$HOST_IP} everywhere in it: each node binds only its own IP and
answers the cluster FQDN with it. Names the hosts plugin does not know fall through to the file
plugin, whose zone holds only the SOA, so they get NXDOMAIN.
*/}}
{{- define "ferry-bootstrap.corefile" -}}
{{- $v := .Values -}}
{{- $zones := include "ferry-bootstrap.zones" . | splitList " " -}}
# Rendered by ferry (charts/ferry-bootstrap). {$HOST_IP} is this node's IP, from the downward API.
{{ range $i, $z := $zones }}{{ if $i }} {{ end }}{{ $z }}:53{{ end }} {
    bind {$HOST_IP}
    errors
    health {$HOST_IP}:{{ int $v.dns.healthPort }} {
        lameduck 5s
    }
    ready {$HOST_IP}:{{ int $v.dns.readyPort }}
    loadbalance
    # /dev/null: without a file the hosts plugin also reads /etc/hosts (127.0.1.1 <hostname> on Debian).
    hosts /dev/null {
        {$HOST_IP} {{ include "ferry-bootstrap.clusterFqdn" . }}
{{- range $v.nodes }}
        {{ .ip }} {{ include "ferry-bootstrap.qualify" (dict "name" .name "domain" $v.domain) }}
{{- end }}
{{- range $v.nodes }}{{ if eq .role "server" }}
        {{ .ip }} registry.{{ $v.domain }}
{{- end }}{{ end }}
{{- range $v.records }}
        {{ .ip }} {{ include "ferry-bootstrap.qualify" (dict "name" .name "domain" $v.domain) }}
{{- end }}
        ttl {{ int $v.dns.ttl }}
        no_reverse
        fallthrough
    }
{{- range $zones }}
    file /etc/coredns/db.{{ . }} {{ . }}
{{- end }}
}
{{- if $v.upstreamDns }}
.:53 {
    bind {$HOST_IP}
    errors
    cache {{ int $v.dns.ttl }}
    loop
    forward . {{ join " " $v.upstreamDns }}
}
{{- end }}
{{- end -}}

{{/* A zone file: only the SOA, the authority of NXDOMAIN answers. (dict "zone" Z "root" $) */}}
{{- define "ferry-bootstrap.zonefile" -}}
{{- $ttl := int .root.Values.dns.ttl -}}
$ORIGIN {{ .zone }}.
{{ .zone }}. {{ $ttl }} IN SOA {{ include "ferry-bootstrap.clusterFqdn" .root }}. hostmaster.{{ .zone }}. 1 7200 1800 86400 {{ $ttl }}
{{- end -}}

{{/* The DNS ConfigMap's data, as JSON: the Corefile and one zone file per zone. */}}
{{- define "ferry-bootstrap.dnsData" -}}
{{- $data := dict "Corefile" (printf "%s\n" (include "ferry-bootstrap.corefile" .)) -}}
{{- range (include "ferry-bootstrap.zones" . | splitList " ") -}}
{{- $_ := set $data (printf "db.%s" .) (printf "%s\n" (include "ferry-bootstrap.zonefile" (dict "zone" . "root" $))) -}}
{{- end -}}
{{- toJson $data -}}
{{- end -}}

{{/* haproxy.cfg: TCP balancing of <node IP>:<apiServerPort> across every server's API server. */}}
{{- define "ferry-bootstrap.haproxyCfg" -}}
{{- $v := .Values -}}
{{- $hc := $v.lb.healthCheck -}}
# Rendered by ferry (charts/ferry-bootstrap). ${HOST_IP} is this node's IP, from the downward API.
global
    log stdout format raw local0 info
    maxconn {{ int $v.lb.maxConnections }}

defaults
    mode tcp
    log global
    option dontlognull
    option redispatch
    retries 3
    timeout connect {{ $v.lb.timeouts.connect }}
    timeout client {{ $v.lb.timeouts.client }}
    timeout server {{ $v.lb.timeouts.server }}

frontend health
    mode http
    bind "${HOST_IP}:{{ int $v.lb.statsPort }}"
    no log
    timeout client 10s
    timeout http-request 5s
    http-request return status 200 content-type text/plain string ok if { path /healthz }
    http-request return status 503 content-type text/plain string "no API server is up" if { path /readyz } { nbsrv(apiservers) eq 0 }
    http-request return status 200 content-type text/plain string ok if { path /readyz }
    stats enable
    stats uri /stats
    stats refresh 10s

frontend apiserver
    option tcplog
    bind "${HOST_IP}:{{ int $v.apiServerPort }}"
    default_backend apiservers

backend apiservers
    balance roundrobin
    option tcp-check
    default-server inter {{ $hc.interval }} fastinter {{ $hc.fastInterval }} downinter {{ $hc.downInterval }} fall {{ int $hc.fall }} rise {{ int $hc.rise }} on-marked-down shutdown-sessions
{{- range $v.nodes }}{{ if eq .role "server" }}
    server {{ .name }} {{ .ip }}:{{ int $v.apiServerPort }} check
{{- end }}{{ end }}
{{- end -}}

{{- define "ferry-bootstrap.lbData" -}}
{{- toJson (dict "haproxy.cfg" (printf "%s\n" (include "ferry-bootstrap.haproxyCfg" .))) -}}
{{- end -}}

{{/* What both DaemonSets' pods share. */}}
{{- define "ferry-bootstrap.podCommon" -}}
hostNetwork: true
dnsPolicy: Default
priorityClassName: system-node-critical
automountServiceAccountToken: false
enableServiceLinks: false
nodeSelector:
  kubernetes.io/os: linux
tolerations:
  - operator: Exists
securityContext:
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{- define "ferry-bootstrap.hostIpEnv" -}}
- name: HOST_IP
  valueFrom:
    fieldRef:
      fieldPath: status.hostIP
{{- end -}}
