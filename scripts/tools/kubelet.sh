# shellcheck shell=bash
# kubelet, from k8s.io/kubernetes through the wrapper module scripts/go/kube-apiserver (pure Go:
# CGO_ENABLED=0 builds it; the node's runtime is containerd over CRI, see scripts/node.sh).
build_kubelet() {
  local minor="${KUBERNETES_VERSION#v1.}"; minor="${minor%%.*}"
  go_build_cached kubelet "$KUBERNETES_VERSION" kube-apiserver k8s.io/kubernetes/cmd/kubelet \
    "-X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
}
