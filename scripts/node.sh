#!/usr/bin/env bash
# A real Kubernetes node for the integration tests, joined to the control plane of
# scripts/control-plane.sh: containerd 1.6 (Debian's, with runc and the CNI plugins), kube-scheduler,
# a kubelet, kube-proxy and CoreDNS, all as background processes of this machine.
#
#   KUBECONFIG=<admin kubeconfig> scripts/node.sh up
#       start it (or, if it is already up, keep it and re-import the images), wait until the Node is
#       Ready. The LAST line of stdout is NODE=<name>; everything else goes to stderr.
#   scripts/node.sh down      stop everything, kill every container, unmount, remove the bridge,
#                             the iptables chains (ours, the kubelet's, kube-proxy's) and the state
#                             (safe to run twice, or after a crash)
#   scripts/node.sh status    exit 0 when every component (COMPONENTS below) runs
#
# What runs:
# - containerd with its own config, root, state, socket and runc root, all under the state dir
#   ${STASH_NODE_DIR:-/tmp/stash-node} (never /var/lib/containerd or /run/containerd), overlayfs
#   snapshotter, cgroupfs, network namespaces mounted under its state. Its CRI sandbox image is
#   docker.io/library/stash-pause:0.1.0. The images come from `node scripts/images.ts build`
#   (locally built OCI archives; no registry is reachable) and are imported into the namespace
#   k8s.io under their normalized names (docker.io/library/<name>:<tag>), so pods must use
#   imagePullPolicy IfNotPresent or Never (the default for a tag other than latest).
# - kube-scheduler and a kubelet (1.34, cgroup v1 with the cgroupfs driver), both with a copy of the
#   admin kubeconfig. The Node is stash-node, with InternalIP 10.88.0.1 (the address the apiserver
#   reaches the kubelet at, with its client certificate; the kubelet serves a self-signed
#   certificate and asks the apiserver to authorize each request).
# - Pod network: the CNI bridge plugin on the bridge stash0 (10.88.0.0/16, gateway 10.88.0.1, made
#   here before the kubelet starts) with host-local IPAM and portmap; containerd adds loopback.
#   Pods are masqueraded when they leave the subnet (ipMasq), except towards the host itself.
# - Services: kube-proxy 1.34 in iptables mode (its chains KUBE-SERVICES, KUBE-SVC-*, KUBE-SEP-*,
#   ... in nat and filter, IPv4 and IPv6; `down` removes them with `kube-proxy --cleanup`, which
#   works from the tables alone, so also after a crash). It changes no global sysctl: no conntrack sizes or
#   timeouts, no NodePorts on localhost (that would set route_localnet on every interface).
#   Its healthz and metrics listen on the gateway, so no loopback port of the tests is taken.
# - Cluster DNS: CoreDNS (scripts/go/coredns) on the gateway, 10.88.0.1:53 (udp and tcp), the
#   kubelet's clusterDNS, serving cluster.local and the reverse zones from the apiserver (admin
#   kubeconfig) and nothing else: every other name is REFUSED at once, so nothing waits on a DNS
#   server outside (this machine may be offline). Pods resolve <service>.<namespace>.svc.
#
# Reaching host services from pods: every service the tests run listens on 127.0.0.1 (the
# functions, PostgreSQL, MariaDB, Redis, the S3/rest/sftp servers). A pod reaches them at 10.88.0.1
# with the same port: an iptables nat PREROUTING rule (in our own chain STASH-NODE-GATEWAY)
# rewrites the destination of packets arriving on stash0 for 10.88.0.1 to 127.0.0.1, and
# net.ipv4.conf.stash0.route_localnet=1 lets the kernel route packets to and from 127.0.0.1 over
# that interface (it drops them as martians otherwise). The server sees the pod's own address as
# the source. The kubelet's KUBE-FIREWALL chain lets these through because they were DNATed.
# DNS (port 53) is the exception: CoreDNS answers on the gateway itself.
# By name: a headless selector-less Service whose EndpointSlice names the gateway and the host
# port (test/support/node.ts hostService) resolves to 10.88.0.1, and the rule above does the rest.
# A ClusterIP Service cannot lead to a loopback server: an endpoint may not be a loopback address
# (the API refuses it), and a connection kube-proxy has DNATed (to the gateway) is never DNATed a
# second time (the nat table is consulted once per connection), so it would reach the gateway
# address itself, where the tests' servers do not listen.
# The `kubernetes` Service has to be a ClusterIP Service (in-cluster clients dial its ClusterIP): its
# EndpointSlice (written here: the control plane runs no endpoint reconciler) names the gateway and
# the apiserver's port, and gateway-relay (scripts/go/gateway-relay) listens exactly there and
# copies each connection to the apiserver on loopback. The apiserver's certificate names the
# ClusterIP, the kubernetes.default.svc names and the gateway.
# Services on the host itself do not change: they stay on loopback.
#
# The Node carries the taint stash.appscode.com/test-node=true:NoSchedule, so the many pods tests
# create that are not meant to run (images that do not exist) stay Pending. Pods that should run here tolerate it by
# namespace: annotate the namespace with
#   scheduler.alpha.kubernetes.io/defaultTolerations: '[{"key":"stash.appscode.com/test-node","operator":"Exists","effect":"NoSchedule"}]'
# and the apiserver's PodTolerationRestriction admission plugin (scripts/control-plane.sh) adds the
# toleration to each pod of that namespace.
#
# Only one node per machine: the bridge, the subnet, the iptables chains (kube-proxy's too), the
# kubepods cgroups and the node name are global. Concurrent callers are serialized with a lock file beside the state dir.
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"
export PATH="$REPO_ROOT/node_modules/.bin:$PATH:/usr/sbin:/sbin"

STATE="${STASH_NODE_DIR:-/tmp/stash-node}"
LOCK="$STATE.lock"
OWNER=scripts/node.sh
# shellcheck source=lib/processes.sh
. "$(dirname "$0")/lib/processes.sh"
NODE_NAME=stash-node
BRIDGE=stash0
SUBNET=10.88.0.0/16
GATEWAY=10.88.0.1
CHAIN=STASH-NODE-GATEWAY
CNI_NETWORK=stash-node
TAINT_KEY=stash.appscode.com/test-node
SOCK="$STATE/containerd.sock"
RUNC_ROOT="$STATE/runc"
COMPONENTS=(containerd kube-scheduler kubelet gateway-relay kube-proxy coredns)
CLUSTER_DOMAIN=cluster.local
READY_TIMEOUT="${STASH_NODE_TIMEOUT:-120}"

[ "$(id -u)" -eq 0 ] || die "scripts/node.sh needs root (containerd, mounts, iptables, the bridge)"

ctr_() { ctr --address "$SOCK" --namespace k8s.io "$@"; }

# ---------------------------------------------------------------------------------------------
# down: every step tolerates what is already gone, and works without containerd (after a crash).

# Our mount points (deepest first): kubelet volumes, container root filesystems, netns, the
# kubelet's shared bind mount of its root dir.
our_mounts() {
  local real
  real="$(realpath -m "$STATE")"
  awk -v root="$real" '$5 == root || index($5, root "/") == 1 { print $5 }' /proc/self/mountinfo |
    awk '{ print length($0) " " $0 }' | sort -rn | cut -d' ' -f2-
}

kill_containers() {
  local id
  # Every container of our runc root, whether or not containerd and its shims still run.
  if [ -d "$RUNC_ROOT/k8s.io" ]; then
    for id in $(runc --root "$RUNC_ROOT/k8s.io" list -q 2>/dev/null); do
      runc --root "$RUNC_ROOT/k8s.io" kill "$id" KILL 2>/dev/null || true
      runc --root "$RUNC_ROOT/k8s.io" delete --force "$id" 2>/dev/null || true
    done
  fi
  # Then tidy containerd's view while it still runs (best effort: its state is removed anyway).
  if pid_alive containerd; then
    for id in $(ctr_ tasks list -q 2>/dev/null); do
      ctr_ tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
      ctr_ tasks delete --force "$id" >/dev/null 2>&1 || true
    done
  fi
}

# The shims of our containerd (argv has `-address $SOCK`); they outlive containerd by design.
kill_shims() {
  local p args
  for p in /proc/[0-9]*; do
    args="$(tr '\0' ' ' 2>/dev/null <"$p/cmdline")" || continue
    case "$args" in *containerd-shim*" -address $SOCK "* | *containerd-shim*" -address $SOCK") kill -9 "${p#/proc/}" 2>/dev/null || true ;; esac
  done
}

unmount_all() {
  local m _
  for _ in 1 2 3; do
    while read -r m; do
      [ -n "$m" ] || continue
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done < <(our_mounts)
    [ -z "$(our_mounts)" ] && return 0
    sleep 0.5
  done
  die "still mounted under $STATE: $(our_mounts | tr '\n' ' ')(not removing it: a bind mount could lead outside)"
}

remove_network() {
  local n
  if iptables -t nat -S "$CHAIN" >/dev/null 2>&1; then
    while iptables -t nat -D PREROUTING -j "$CHAIN" 2>/dev/null; do :; done
    iptables -t nat -F "$CHAIN"
    iptables -t nat -X "$CHAIN"
  fi
  # The bridge plugin's ipMasq rules of pods that never got a CNI DEL (their comment names our network).
  while n="$(iptables -t nat -L POSTROUTING -n --line-numbers 2>/dev/null |
    awk -v net="name: \"$CNI_NETWORK\"" '$2 ~ /^CNI-/ && index($0, net) { print $1 " " $2; exit }')" && [ -n "$n" ]; do
    iptables -t nat -D POSTROUTING "${n%% *}"
    iptables -t nat -F "${n#* }" 2>/dev/null || true
    iptables -t nat -X "${n#* }" 2>/dev/null || true
  done
  if ip link show "$BRIDGE" >/dev/null 2>&1; then ip link delete "$BRIDGE"; fi
}

# The chains the kubelet makes (its canaries, the hint for kube-proxy, and KUBE-FIREWALL, which drops
# packets for 127.0.0.0/8 from elsewhere unless they were DNATed, as ours are): we ran the only kubelet.
remove_kubelet_chains() {
  local cmd table chain
  for cmd in iptables ip6tables; do
    command -v "$cmd" >/dev/null || continue
    while "$cmd" -t filter -D INPUT -j KUBE-FIREWALL 2>/dev/null; do :; done
    while "$cmd" -t filter -D OUTPUT -j KUBE-FIREWALL 2>/dev/null; do :; done
    for table in filter nat mangle; do
      for chain in KUBE-FIREWALL KUBE-KUBELET-CANARY KUBE-IPTABLES-HINT; do
        "$cmd" -t "$table" -S "$chain" >/dev/null 2>&1 || continue
        "$cmd" -t "$table" -F "$chain" || true
        "$cmd" -t "$table" -X "$chain" || true
      done
    done
  done
}

# kube-proxy's chains (KUBE-SERVICES, KUBE-POSTROUTING, KUBE-SVC-*, KUBE-SEP-*, ... in nat, filter
# and mangle, both families) and the rules jumping to them: `kube-proxy --cleanup` finds them by name
# in the tables themselves, so it works after a crash too. (It also tries the ipvs and nftables
# modes' leftovers; there are none here: the ip_vs module and the nft command are missing, and
# we ran the only kube-proxy.)
remove_kube_proxy_chains() {
  local bin="$STASH_BIN/kube-proxy" out
  if [ -x "$bin" ]; then
    out="$("$bin" --cleanup 2>&1 9>&-)" || log "kube-proxy --cleanup failed: $(tail -n 5 <<<"$out")"
  fi
  if kube_proxy_chains_left; then
    die "kube-proxy's iptables chains are still there ($(iptables-save | sed -n 's/^:\(KUBE-[^ ]*\).*/\1/p' | tr '\n' ' '))" \
      "after '$bin --cleanup'; run it by hand to see why, or 'scripts/tools.sh ensure kube-proxy' if it is missing"
  fi
}

# True when a chain kube-proxy makes is in some table (the kubelet's are removed separately).
kube_proxy_chains_left() {
  grep -q '^:KUBE-\(SERVICES\|POSTROUTING\|MARK-MASQ\|NODEPORTS\|EXTERNAL-SERVICES\|FORWARD\|PROXY-FIREWALL\|PROXY-CANARY\|SVC-\|SVL-\|EXT-\|FW-\|SEP-\)' <<<"$(iptables-save 2>/dev/null)"
}

# The kubelet's pod cgroups (cgroup v1, cgroupfs driver): only empty ones go, so nothing running is hurt.
remove_cgroups() {
  local d
  for d in /sys/fs/cgroup/*/kubepods; do
    if [ -d "$d" ]; then find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true; fi
  done
}

# The Node, and the `kubernetes` Service's EndpointSlice that names this node's gateway.
delete_node_objects() {
  local kubectl
  [ -f "$STATE/kubeconfig" ] || return 0
  kubectl="$STASH_BIN/kubectl"
  [ -x "$kubectl" ] || return 0
  "$kubectl" --kubeconfig "$STATE/kubeconfig" --request-timeout 5s delete node "$NODE_NAME" --ignore-not-found --wait=false \
    >/dev/null 2>&1 9>&- || log "could not delete Node $NODE_NAME (is the control plane down? then it is gone anyway)"
  "$kubectl" --kubeconfig "$STATE/kubeconfig" --request-timeout 5s delete endpointslice kubernetes -n default --ignore-not-found \
    --wait=false >/dev/null 2>&1 9>&- || true
}

# The one path the kubelet does not let us move: its device-plugin socket (constant in its source).
remove_device_plugin_socket() {
  rm -f /var/lib/kubelet/device-plugins/kubelet.sock
  rmdir /var/lib/kubelet/device-plugins /var/lib/kubelet 2>/dev/null || true
}

teardown() {
  stop coredns
  stop kube-proxy
  remove_kube_proxy_chains
  stop gateway-relay
  stop kubelet
  stop kube-scheduler
  delete_node_objects
  kill_containers
  stop containerd
  kill_shims
  unmount_all
  remove_network
  remove_kubelet_chains
  remove_cgroups
  remove_device_plugin_socket
  rm -rf --one-file-system "$STATE"
}

# ---------------------------------------------------------------------------------------------
# up

setup_network() {
  ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
  ip addr show dev "$BRIDGE" | grep -q "inet $GATEWAY/" || ip addr add "$GATEWAY/${SUBNET#*/}" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  sysctl -qw "net.ipv4.conf.$BRIDGE.route_localnet=1"
  iptables -t nat -N "$CHAIN" 2>/dev/null || iptables -t nat -F "$CHAIN"
  # DNS stays on the gateway, where CoreDNS listens.
  local proto
  for proto in udp tcp; do
    iptables -t nat -A "$CHAIN" -i "$BRIDGE" -d "$GATEWAY/32" -p "$proto" --dport 53 -j RETURN \
      -m comment --comment "stash test node: cluster DNS answers on the gateway"
  done
  iptables -t nat -A "$CHAIN" -i "$BRIDGE" -d "$GATEWAY/32" -j DNAT --to-destination 127.0.0.1 \
    -m comment --comment "stash test node: pods reach host loopback services at the gateway"
  iptables -t nat -C PREROUTING -j "$CHAIN" 2>/dev/null || iptables -t nat -I PREROUTING -j "$CHAIN"

  mkdir -p "$STATE/cni/net.d" "$STATE/cni/ipam"
  cat >"$STATE/cni/net.d/10-stash-node.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$CNI_NETWORK",
  "plugins": [
    {
      "type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": true, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$STATE/cni/ipam",
        "ranges": [[{ "subnet": "$SUBNET", "gateway": "$GATEWAY" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
EOF
}

write_containerd_config() {
  local runc
  runc="$(command -v runc)" || die "runc is not installed (scripts/setup.sh installs it)"
  cat >"$STATE/containerd.toml" <<EOF
version = 2
root = "$STATE/containerd/root"
state = "$STATE/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$STATE/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/library/stash-pause:0.1.0"
  netns_mounts_under_state_dir = true
  # This machine grants root no CAP_SYS_RESOURCE, so runc cannot lower a container's oom_score_adj
  # (pause gets -998, Guaranteed pods -997): cap them at containerd's own instead of failing.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$runc"
        Root = "$RUNC_ROOT"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
    max_conf_num = 1
EOF
}

# normalized REF: the name the CRI looks images up by (docker.io/library/ for a bare name).
normalized() {
  local ref="$1" first="${1%%/*}"
  if [ "$first" = "$ref" ]; then echo "docker.io/library/$ref"
  elif [[ "$first" == *.* || "$first" == *:* || "$first" == localhost ]]; then echo "$ref"
  else echo "docker.io/$ref"; fi
}

import_images() {
  # (grep reads captured output, never a pipe: under pipefail, grep -q's early exit would make the
  # writer's SIGPIPE fail the test.)
  local list ref archive want digest out imported name
  log "building the images (node scripts/images.ts build)"
  list="$(cd "$REPO_ROOT" && node scripts/images.ts build 9>&-)" || die "node scripts/images.ts build failed (see above)"
  while read -r ref archive; do
    [ -n "$ref" ] || continue
    [ -f "$archive" ] || die "scripts/images.ts printed '$ref $archive' but there is no such file"
    want="$(normalized "$ref")"
    # Importing hundreds of MB takes seconds: skip an image containerd already has with this digest.
    digest="$(tar -xOf "$archive" --wildcards '*index.json' 2>/dev/null | jq -r '.manifests[0].digest' 2>/dev/null)" || digest=""
    if [ -n "$digest" ] && [ "$(ctr_ images ls "name==$want" | awk 'NR == 2 { print $3 }')" = "$digest" ]; then
      log "image $want unchanged ($digest)"
      continue
    fi
    out="$(ctr_ images import "$archive" 2>&1)" || die "importing $archive into containerd failed: $out"
    # An OCI archive names its image by its own annotation (often just name:tag), so tag it with the
    # normalized name and drop the other names the import made.
    grep -qxF "$want" <<<"$(ctr_ images ls -q)" || {
      imported="$(sed -n 's/^unpacking \(.*\) (sha256:.*$/\1/p' <<<"$out" | head -n1)"
      [ -n "$imported" ] || die "importing $archive gave no image name: $out"
      ctr_ images tag --force "$imported" "$want" >/dev/null
    }
    while read -r name; do
      [ -z "$name" ] || [ "$name" = "$want" ] || ctr_ images rm "$name" >/dev/null 2>&1 || true
    done < <(sed -n 's/^unpacking \(.*\) (sha256:.*$/\1/p' <<<"$out")
    log "image $want from $archive"
  done <<<"$list"
  grep -qxF docker.io/library/stash-pause:0.1.0 <<<"$(ctr_ images ls -q)" ||
    die "scripts/images.ts build gave no stash-pause:0.1.0, the sandbox image every pod needs"
}

write_kubelet_config() {
  cat >"$STATE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$SOCK
cgroupDriver: cgroupfs
failSwapOn: false
# Serves on the gateway only, so no port on host loopback is taken from the tests' services.
address: $GATEWAY
port: 10250
readOnlyPort: 0
healthzPort: 0
# The apiserver's client certificate is signed by the cluster CA; tokens and every request's
# permission are checked with the apiserver (TokenReview, SubjectAccessReview).
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $STATE/ca.crt}
authorization:
  mode: Webhook
podLogsDir: $STATE/pod-logs
volumePluginDir: $STATE/kubelet/volume-plugins
registerWithTaints:
- {key: $TAINT_KEY, value: "true", effect: NoSchedule}
# Locally imported images can never be pulled again: never collect them, never evict for disk or
# memory on a busy test machine ("0%" switches a signal off).
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "0%", nodefs.available: "0%", nodefs.inodesFree: "0%", imagefs.available: "0%", imagefs.inodesFree: "0%"}
serializeImagePulls: false
# CoreDNS on the gateway (start_services).
clusterDNS: [$GATEWAY]
clusterDomain: $CLUSTER_DOMAIN
EOF
}

# The `kubernetes` Service's one endpoint: the gateway and the apiserver's port, where gateway-relay
# listens (the control plane runs no endpoint reconciler: its apiserver advertises nothing).
write_kubernetes_endpoints() {
  "$KUBECTL" --kubeconfig "$STATE/kubeconfig" apply --server-side --force-conflicts --field-manager stash-node -f - \
    >/dev/null 9>&- <<EOF || die "writing the kubernetes Service's EndpointSlice failed (see the kubectl error above)"
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kubernetes
  namespace: default
  labels:
    kubernetes.io/service-name: kubernetes
    endpointslice.kubernetes.io/managed-by: stash-node
addressType: IPv4
endpoints:
- addresses: [$GATEWAY]
  conditions: {ready: true}
ports:
- {name: https, port: $API_PORT, protocol: TCP}
EOF
}

write_kube_proxy_config() {
  cat >"$STATE/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $STATE/kubeconfig}
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $SUBNET
# On the gateway: no loopback port of the tests' servers is taken.
healthzBindAddress: $GATEWAY:10256
metricsBindAddress: $GATEWAY:10249
# NodePorts (none are used) only on the node's own address, the gateway.
nodePortAddresses: [primary]
# No global settings changed: no NodePorts on localhost (route_localnet on every interface), no
# conntrack table size or timeouts, no oom_score_adj (root here may not lower it).
iptables: {localhostNodePorts: false}
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
oomScoreAdj: 0
EOF
}

# Only the cluster's zones: any other name is REFUSED at once (nothing is forwarded, so nothing
# waits on a DNS server outside). Only denials and errors are logged.
write_corefile() {
  cat >"$STATE/Corefile" <<EOF
$CLUSTER_DOMAIN:53 in-addr.arpa:53 ip6.arpa:53 {
  bind $GATEWAY
  errors
  log . {
    class denial error
  }
  ready $GATEWAY:8181
  kubernetes $CLUSTER_DOMAIN in-addr.arpa ip6.arpa {
    kubeconfig $STATE/kubeconfig
  }
}
EOF
}

# start_services RELAY_BIN PROXY_BIN COREDNS_BIN: Services and DNS, once the Node exists (kube-proxy
# reads its addresses from it).
start_services() {
  local relay_bin="$1" proxy_bin="$2" coredns_bin="$3" _
  write_kubernetes_endpoints
  start gateway-relay "$relay_bin" "$GATEWAY:$API_PORT" "127.0.0.1:$API_PORT"
  write_kube_proxy_config
  start kube-proxy "$proxy_bin" --config "$STATE/kube-proxy.yaml" --v=1
  write_corefile
  start coredns "$coredns_bin" -conf "$STATE/Corefile"
  # Ready: kube-proxy has written the `kubernetes` Service's rules, CoreDNS has listed the Services
  # and EndpointSlices (its ready plugin answers 200).
  for _ in $(seq 1 $((READY_TIMEOUT * 4))); do
    pid_alive gateway-relay || fail_with_log gateway-relay "gateway-relay exited during start"
    pid_alive kube-proxy || fail_with_log kube-proxy "kube-proxy exited during start"
    pid_alive coredns || fail_with_log coredns "CoreDNS exited during start"
    kubernetes_service_routed && curl -fsS --max-time 2 "http://$GATEWAY:8181/ready" >/dev/null 2>&1 && return 0
    sleep 0.25
  done
  kubernetes_service_routed || fail_with_log kube-proxy "kube-proxy wrote no rules for the kubernetes Service within ${READY_TIMEOUT}s"
  fail_with_log coredns "CoreDNS did not report ready within ${READY_TIMEOUT}s"
}

kubernetes_service_routed() {
  grep -q 'default/kubernetes:https cluster IP' <<<"$(iptables -t nat -S KUBE-SERVICES 2>/dev/null)"
}

node_ready() {
  [ "$("$KUBECTL" --kubeconfig "$STATE/kubeconfig" --request-timeout 5s get node "$NODE_NAME" 9>&- \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

is_up() {
  local c
  for c in "${COMPONENTS[@]}"; do pid_alive "$c" || return 1; done
  node_ready
}

start_all() {
  local kubelet_bin scheduler_bin relay_bin proxy_bin coredns_bin
  kubelet_bin="$("$REPO_ROOT/scripts/tools.sh" ensure kubelet 9>&- | tail -n1)"
  scheduler_bin="$("$REPO_ROOT/scripts/tools.sh" ensure kube-scheduler 9>&- | tail -n1)"
  relay_bin="$("$REPO_ROOT/scripts/tools.sh" ensure gateway-relay 9>&- | tail -n1)"
  proxy_bin="$("$REPO_ROOT/scripts/tools.sh" ensure kube-proxy 9>&- | tail -n1)"
  coredns_bin="$("$REPO_ROOT/scripts/tools.sh" ensure coredns 9>&- | tail -n1)"
  command -v containerd >/dev/null || die "containerd is not installed (scripts/setup.sh installs it)"

  teardown
  mkdir -p "$STATE"
  chmod 700 "$STATE"
  cp "$KUBECONFIG" "$STATE/kubeconfig"
  chmod 600 "$STATE/kubeconfig"
  # The cluster CA, which signed the apiserver's client certificate towards kubelets.
  "$KUBECTL" --kubeconfig "$STATE/kubeconfig" config view --raw --minify \
    -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' 9>&- | base64 -d >"$STATE/ca.crt"
  [ -s "$STATE/ca.crt" ] || die "the kubeconfig $KUBECONFIG has no certificate-authority-data"
  API_PORT="$("$KUBECTL" --kubeconfig "$STATE/kubeconfig" config view --minify -o jsonpath='{.clusters[0].cluster.server}' 9>&- |
    sed -n 's|^https://127\.0\.0\.1:\([0-9]*\)$|\1|p')"
  [ -n "$API_PORT" ] || die "the kubeconfig's server is not https://127.0.0.1:<port> (the apiserver of scripts/control-plane.sh)"

  setup_network
  write_containerd_config
  start containerd containerd --config "$STATE/containerd.toml"
  local _
  for _ in $(seq 1 100); do
    pid_alive containerd || fail_with_log containerd "containerd exited during start"
    ctr_ version >/dev/null 2>&1 && break
    sleep 0.1
  done
  ctr_ version >/dev/null 2>&1 || fail_with_log containerd "containerd did not answer on $SOCK within 10s"
  import_images

  start kube-scheduler "$scheduler_bin" \
    --kubeconfig "$STATE/kubeconfig" --authentication-kubeconfig "$STATE/kubeconfig" \
    --authorization-kubeconfig "$STATE/kubeconfig" \
    --bind-address 127.0.0.1 --secure-port 0 --leader-elect=false --profiling=false --v=1

  write_kubelet_config
  start kubelet "$kubelet_bin" \
    --config "$STATE/kubelet.yaml" --kubeconfig "$STATE/kubeconfig" \
    --root-dir "$STATE/kubelet" --cert-dir "$STATE/kubelet/pki" --hostname-override "$NODE_NAME" --node-ip "$GATEWAY" --v=1

  for _ in $(seq 1 $((READY_TIMEOUT * 2))); do
    pid_alive containerd || fail_with_log containerd "containerd exited"
    pid_alive kube-scheduler || fail_with_log kube-scheduler "kube-scheduler exited during start"
    pid_alive kubelet || fail_with_log kubelet "kubelet exited during start"
    node_ready && break
    sleep 0.5
  done
  node_ready || fail_with_log kubelet "Node $NODE_NAME was not Ready within ${READY_TIMEOUT}s"
  start_services "$relay_bin" "$proxy_bin" "$coredns_bin"
}

cmd_up() {
  [ -f "${KUBECONFIG:-}" ] ||
    die "set KUBECONFIG to the control plane's admin kubeconfig (the last line of 'scripts/control-plane.sh up')"
  take_lock
  KUBECTL="$("$REPO_ROOT/scripts/tools.sh" ensure kubectl 9>&- | tail -n1)"
  if is_up && cmp -s "$KUBECONFIG" "$STATE/kubeconfig"; then
    log "node already up (state in $STATE); importing the images again"
    import_images
  else
    start_all
    log "node $NODE_NAME is Ready"
  fi
  echo "NODE=$NODE_NAME"
}

cmd_down() {
  take_lock
  teardown
  log "node down; removed $STATE"
}

cmd_status() {
  components_status
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) die "usage: KUBECONFIG=... scripts/node.sh up | down | status" ;;
esac
