# shellcheck shell=bash
# kube-apiserver, from k8s.io/kubernetes through the wrapper module scripts/go/kube-apiserver.
build_kube_apiserver() {
  local minor="${KUBERNETES_VERSION#v1.}"; minor="${minor%%.*}"
  go_build_cached kube-apiserver "$KUBERNETES_VERSION" kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver \
    "-X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
}
