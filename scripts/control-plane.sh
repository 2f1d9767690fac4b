#!/usr/bin/env bash
# A real Kubernetes control plane for the integration tests: etcd, kube-apiserver and
# kube-controller-manager (no scheduler, no kubelet: scripts/node.sh adds a node) as background
# processes on loopback.
#
#   scripts/control-plane.sh up [--with-knative (the default) | --without-knative]
#       start it (or, if it is already up, keep it), install the CRDs in shared/api/crds/ and Knative
#       Eventing's CRDs, wait until they are Established. The LAST line of stdout is
#       KUBECONFIG=<path> (an admin credential in system:masters); everything else goes to stderr.
#   scripts/control-plane.sh down      stop the processes and remove their data
#   scripts/control-plane.sh status    exit 0 when up (apiserver /readyz answers ok), 1 otherwise
#   scripts/control-plane.sh env       print `export KUBECONFIG=<path>` (fails when not up)
#
# State (certificates, kubeconfigs, etcd data, logs, PIDs, ports) lives in
# ${STASH_CONTROL_PLANE_DIR:-/tmp/stash-control-plane}. Concurrent callers are serialized with a
# lock file beside it, so every test process may call `up`.
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"
export PATH="$REPO_ROOT/node_modules/.bin:$PATH"

STATE="${STASH_CONTROL_PLANE_DIR:-/tmp/stash-control-plane}"
LOCK="$STATE.lock"
OWNER=scripts/control-plane.sh
# shellcheck source=lib/processes.sh
. "$(dirname "$0")/lib/processes.sh"
PKI="$STATE/pki"
KUBECONFIG_PATH="$STATE/admin.kubeconfig"
COMPONENTS=(etcd kube-apiserver kube-controller-manager)
READY_TIMEOUT="${STASH_CONTROL_PLANE_TIMEOUT:-120}"

apiserver_ready() {
  [ -f "$STATE/ports.env" ] && [ -f "$PKI/admin.crt" ] || return 1
  # shellcheck source=/dev/null
  . "$STATE/ports.env"  # defines ETCD_PORT, ETCD_PEER_PORT, APISERVER_PORT
  # shellcheck disable=SC2153
  [ "$(curl -sS --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "https://127.0.0.1:$APISERVER_PORT/readyz" 2>/dev/null)" = ok ]
}

is_up() {
  local c
  for c in "${COMPONENTS[@]}"; do pid_alive "$c" || return 1; done
  apiserver_ready
}

# A TCP port on 127.0.0.1 that nothing listens on, below Linux's default ephemeral range.
free_port() {
  local port _
  for _ in $(seq 1 200); do
    port=$((20000 + RANDOM % 12000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && ! grep -qx "$port" "$STATE/.ports-taken" 2>/dev/null; then
      echo "$port" >>"$STATE/.ports-taken"
      echo "$port"; return 0
    fi
  done
  die "found no free TCP port on 127.0.0.1 between 20000 and 32000; free some and rerun"
}

stop_all() {
  local c
  for c in kube-controller-manager kube-apiserver etcd; do stop "$c"; done
}

# kubeconfig FILE USER CERT KEY PORT: a kubeconfig with every credential embedded.
write_kubeconfig() {
  local file="$1" user="$2" cert="$3" key="$4" port="$5"
  cat >"$file.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: stash
  cluster:
    server: https://127.0.0.1:$port
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 "$cert")
    client-key-data: $(base64 -w0 "$key")
contexts:
- name: stash
  context:
    cluster: stash
    user: $user
current-context: stash
EOF
  chmod 600 "$file.tmp"
  mv "$file.tmp" "$file"
}

# client_cert NAME CN [O]: a client certificate signed by the cluster CA.
client_cert() {
  local name="$1" cn="$2" org="${3:-}" subj
  subj="/CN=$cn"; [ -n "$org" ] && subj="/O=$org$subj"
  openssl req -new -newkey rsa:2048 -nodes -keyout "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  printf 'keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' >"$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
}

generate_pki() {
  mkdir -p "$PKI"; chmod 700 "$PKI"
  log "generating the CA, serving and client certificates and the service-account key in $PKI"
  openssl req -x509 -new -newkey rsa:2048 -nodes -keyout "$PKI/ca.key" -days 3650 -sha256 \
    -subj "/CN=stash-test-ca" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" -out "$PKI/ca.crt" 2>/dev/null
  openssl req -new -newkey rsa:2048 -nodes -keyout "$PKI/apiserver.key" -subj "/CN=kube-apiserver" \
    -out "$PKI/apiserver.csr" 2>/dev/null
  # Its names: loopback, the `kubernetes` Service (ClusterIP and DNS names) and the test node's
  # pod gateway, where scripts/node.sh relays the Service's connections to it.
  cat >"$PKI/apiserver.ext" <<'EOF'
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.0.0.1,IP:10.88.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EOF
  openssl x509 -req -in "$PKI/apiserver.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$PKI/apiserver.ext" -out "$PKI/apiserver.crt" 2>/dev/null
  client_cert admin stash-admin system:masters
  client_cert kube-controller-manager system:kube-controller-manager
  # The apiserver's client certificate towards kubelets (pods/log, exec, port-forward on the test
  # node, scripts/node.sh), which authorize it by a SubjectAccessReview: system:masters passes.
  client_cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
}

start_all() {
  local etcd_bin apiserver_bin kcm_bin
  etcd_bin="$("$REPO_ROOT/scripts/tools.sh" ensure etcd | tail -n1)"
  apiserver_bin="$("$REPO_ROOT/scripts/tools.sh" ensure kube-apiserver | tail -n1)"
  kcm_bin="$("$REPO_ROOT/scripts/tools.sh" ensure kube-controller-manager | tail -n1)"

  stop_all
  rm -rf "$STATE"
  mkdir -p "$STATE/etcd"
  chmod 700 "$STATE" "$STATE/etcd"
  generate_pki

  local etcd_port etcd_peer_port apiserver_port
  etcd_port="$(free_port)"; etcd_peer_port="$(free_port)"; apiserver_port="$(free_port)"
  printf 'ETCD_PORT=%s\nETCD_PEER_PORT=%s\nAPISERVER_PORT=%s\n' "$etcd_port" "$etcd_peer_port" "$apiserver_port" >"$STATE/ports.env"
  write_kubeconfig "$KUBECONFIG_PATH" stash-admin "$PKI/admin.crt" "$PKI/admin.key" "$apiserver_port"
  write_kubeconfig "$STATE/kube-controller-manager.kubeconfig" system:kube-controller-manager \
    "$PKI/kube-controller-manager.crt" "$PKI/kube-controller-manager.key" "$apiserver_port"

  start etcd "$etcd_bin" --name stash --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster "stash=http://127.0.0.1:$etcd_peer_port" --initial-cluster-state new \
    --unsafe-no-fsync --log-level warn

  # PodTolerationRestriction (besides the default admission plugins) gives every pod of a namespace
  # the tolerations in its scheduler.alpha.kubernetes.io/defaultTolerations annotation: that is how
  # tests let pods onto the tainted test node (scripts/node.sh). The node's InternalIP is the
  # address the apiserver reaches its kubelet at (its hostname resolves nowhere). No endpoint
  # reconciler: the apiserver listens on loopback, which an endpoint may not be, so the test node
  # writes the `kubernetes` Service's EndpointSlice itself (its gateway, relayed to loopback).
  start kube-apiserver "$apiserver_bin" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$apiserver_port" \
    --cert-dir "$PKI" --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" \
    --authorization-mode Node,RBAC \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --service-cluster-ip-range 10.0.0.0/24 \
    --endpoint-reconciler-type none \
    --enable-admission-plugins PodTolerationRestriction \
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types InternalIP,Hostname \
    --allow-privileged=true --profiling=false --v=1

  local _
  for _ in $(seq 1 $((READY_TIMEOUT * 4))); do
    pid_alive etcd || fail_with_log etcd "etcd exited during start"
    pid_alive kube-apiserver || fail_with_log kube-apiserver "kube-apiserver exited during start"
    apiserver_ready && break
    sleep 0.25
  done
  apiserver_ready || fail_with_log kube-apiserver "kube-apiserver did not report /readyz ok within ${READY_TIMEOUT}s"
  log "kube-apiserver is ready on https://127.0.0.1:$apiserver_port"

  start kube-controller-manager "$kcm_bin" \
    --kubeconfig "$STATE/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig "$STATE/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig "$STATE/kube-controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port 0 --cert-dir "$PKI" \
    --leader-elect=false --use-service-account-credentials=true \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --service-cluster-ip-range 10.0.0.0/24 --flex-volume-plugin-dir "$STATE/flexvolume" --profiling=false --v=1
  sleep 0.5
  pid_alive kube-controller-manager || fail_with_log kube-controller-manager "kube-controller-manager exited during start"
}

# The CRD files of Knative Eventing (the Go module knative.dev/eventing at KNATIVE_EVENTING_VERSION).
knative_crd_files() {
  local dir
  dir="$(cd / && GOFLAGS='' go mod download -json "knative.dev/eventing@$KNATIVE_EVENTING_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')" ||
    die "go mod download knative.dev/eventing@$KNATIVE_EVENTING_VERSION failed (needs the Go module proxy once; then it is cached)"
  [ -d "$dir/config/core/resources" ] || die "knative.dev/eventing@$KNATIVE_EVENTING_VERSION has no config/core/resources in $dir"
  grep -l '^kind: CustomResourceDefinition' "$dir"/config/core/resources/*.yaml
}

apply_crds() {
  local with_knative="$1" kubectl files=()
  kubectl="$("$REPO_ROOT/scripts/tools.sh" ensure kubectl | tail -n1)"
  shopt -s nullglob
  local ours=("$REPO_ROOT"/shared/api/crds/*.yaml)
  shopt -u nullglob
  if [ ${#ours[@]} -eq 0 ]; then
    log "warning: no CRDs in shared/api/crds/ yet (run 'npm run gen:crds'); installing none of Stash's"
  else
    files+=("${ours[@]}")
  fi
  if [ "$with_knative" = yes ]; then
    local knative
    knative="$(knative_crd_files)" || exit 1
    mapfile -t -O "${#files[@]}" files <<<"$knative"
  fi
  [ ${#files[@]} -gt 0 ] || return 0
  local args=() f
  for f in "${files[@]}"; do args+=(-f "$f"); done
  log "applying ${#files[@]} CRD files"
  KUBECONFIG="$KUBECONFIG_PATH" "$kubectl" apply --server-side --force-conflicts --field-manager stash-control-plane \
    "${args[@]}" >/dev/null 9>&- || die "applying CRDs failed (see the kubectl error above); fix the YAML in shared/api/crds/ or rerun"
  # (`kubectl wait` takes seconds even when all are Established; one list call per poll is quick.)
  local states _
  for _ in $(seq 1 240); do
    states="$(KUBECONFIG="$KUBECONFIG_PATH" "$kubectl" get "${args[@]}" 9>&- \
      -o jsonpath='{range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Established")].status}{"\n"}{end}')" ||
      die "listing the CRDs failed (see the kubectl error above)"
    grep -qv '=True$' <<<"$states" || return 0
    sleep 0.25
  done
  die "CRDs not Established after 60s: $(grep -v '=True$' <<<"$states" | tr '\n' ' ')('kubectl get crd NAME -o yaml' shows why)"
}

cmd_up() {
  local with_knative=yes arg
  for arg in "$@"; do
    case "$arg" in
      --with-knative) with_knative=yes ;;
      --without-knative) with_knative=no ;;
      *) die "unknown option '$arg' for up (known: --with-knative, --without-knative)" ;;
    esac
  done
  take_lock
  if is_up; then
    log "control plane already up (state in $STATE)"
  else
    start_all
  fi
  apply_crds "$with_knative"
  echo "KUBECONFIG=$KUBECONFIG_PATH"
}

cmd_down() {
  take_lock
  stop_all
  rm -rf "$STATE"
  log "control plane down; removed $STATE"
}

cmd_status() {
  local ok=0
  components_status || ok=1
  if apiserver_ready; then log "kube-apiserver /readyz: ok"; else log "kube-apiserver /readyz: not ok"; ok=1; fi
  return "$ok"
}

cmd_env() {
  is_up || die "the control plane is not up; run scripts/control-plane.sh up"
  echo "export KUBECONFIG=$KUBECONFIG_PATH"
}

case "${1:-}" in
  up) shift; cmd_up "$@" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *) die "usage: scripts/control-plane.sh up [--without-knative] | down | status | env" ;;
esac
