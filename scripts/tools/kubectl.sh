# shellcheck shell=bash
# kubectl, from k8s.io/kubernetes through the wrapper module scripts/go/kube-apiserver.
build_kubectl() {
  local minor="${KUBERNETES_VERSION#v1.}"; minor="${minor%%.*}"
  go_build_cached kubectl "$KUBERNETES_VERSION" kube-apiserver k8s.io/kubernetes/cmd/kubectl \
    "-X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
}
