#!/usr/bin/env bash
# Installs the tools that check the deployment files, when missing: helm (built from the Go module
# proxy, pinned) and docker-compose (Debian's, a real Compose parser that needs no Docker engine).
# Idempotent; prints where each tool is. Source it or read its last lines for HELM_BIN.
set -euo pipefail

HELM_VERSION=v3.20.2
GOBIN_DIR="$(go env GOBIN)"
[ -n "$GOBIN_DIR" ] || GOBIN_DIR="$(go env GOPATH)/bin"
HELM_BIN="$GOBIN_DIR/helm"

have_pinned_helm() {
  [ -x "$1" ] && [ "$("$1" version --template '{{.Version}}' 2>/dev/null)" = "$HELM_VERSION" ]
}

if command -v helm >/dev/null 2>&1 && have_pinned_helm "$(command -v helm)"; then
  HELM_BIN=$(command -v helm)
elif ! have_pinned_helm "$HELM_BIN"; then
  echo "install-tools: building helm $HELM_VERSION with go install (a few minutes)" >&2
  # Same version stamps as helm's release Makefile, so that the binary reports its version and
  # renders for the Kubernetes release it was built against (not the v1.20 fallback).
  gomod=$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  k8s_minor=$(awk '$1 == "k8s.io/client-go" { print $2 }' "$gomod" | cut -d. -f2)
  [ -n "$k8s_minor" ] || { echo "install-tools: cannot read client-go's version from $gomod" >&2; exit 1; }
  ldflags="-w -s -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  for pkg in pkg/lint/rules pkg/chartutil; do
    ldflags="$ldflags -X helm.sh/helm/v3/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$k8s_minor"
  done
  GOBIN="$GOBIN_DIR" go install -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  have_pinned_helm "$HELM_BIN" || { echo "install-tools: $HELM_BIN is not helm $HELM_VERSION" >&2; exit 1; }
fi

if ! command -v docker-compose >/dev/null 2>&1; then
  echo "install-tools: installing Debian's docker-compose" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq docker-compose >/dev/null
fi

echo "helm: $HELM_BIN ($("$HELM_BIN" version --short))"
echo "docker-compose: $(command -v docker-compose) ($(docker-compose version --short 2>/dev/null))"
