# shellcheck shell=bash
# kube-proxy, from k8s.io/kubernetes through the wrapper module scripts/go/kube-apiserver (pure Go;
# the test node runs it in iptables mode, see scripts/node.sh).
build_kube_proxy() {
  local minor="${KUBERNETES_VERSION#v1.}"; minor="${minor%%.*}"
  go_build_cached kube-proxy "$KUBERNETES_VERSION" kube-apiserver k8s.io/kubernetes/cmd/kube-proxy \
    "-X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
}
