#!/usr/bin/env bash
# Installs and builds the verifiers of test/interop/verifiers.test.ts, idempotently, from the package registries only:
#   openssl (Debian, when missing), the Python virtualenv (PyPI, pinned in requirements.txt), the Go verifier (Go
#   module proxy, pinned in go.mod/go.sum) and the Java verifier (Maven Central, pinned in pom.xml).
# Each step says what it did; a step whose inputs have not changed since its last run is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
INTEROP=test/interop

say() { echo "interop-deps: $*"; }
apt_updated=""
apt_install() {
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if [ -z "$apt_updated" ]; then $sudo apt-get update -qq; apt_updated=1; fi
  $sudo apt-get install -y -qq "$@" >/dev/null
}
# True when $1 exists and is newer than every other argument.
up_to_date() {
  local target=$1 src
  shift
  [ -e "$target" ] || return 1
  for src in "$@"; do [ "$target" -nt "$src" ] || return 1; done
}

# --- OpenSSL CLI ---------------------------------------------------------------------------------------------------
if command -v openssl >/dev/null 2>&1; then
  say "openssl: present ($(openssl version))"
else
  say "openssl: installing Debian's package"
  apt_install openssl
  say "openssl: installed ($(openssl version))"
fi

# --- Python: PyJWT and jwcrypto in a virtualenv ---------------------------------------------------------------------
py=$INTEROP/python
stamp=$py/.venv/.requirements.sha256
want=$(sha256sum "$py/requirements.txt" | cut -d' ' -f1)
if [ -x "$py/.venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  say "python: virtualenv up to date ($py/.venv)"
else
  t0=$SECONDS
  say "python: creating $py/.venv and installing $py/requirements.txt from PyPI"
  rm -rf "$py/.venv"
  if ! python3 -m venv "$py/.venv" 2>/dev/null; then
    say "python: python3 cannot make a virtualenv; installing Debian's python3-venv"
    apt_install python3-venv
    rm -rf "$py/.venv"
    python3 -m venv "$py/.venv"
  fi
  "$py/.venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$py/requirements.txt"
  echo "$want" >"$stamp"
  say "python: installed in $((SECONDS - t0))s: $("$py/.venv/bin/python" -m pip freeze --disable-pip-version-check | tr '\n' ' ')"
fi

# --- Go: go-jose, golang-jwt + keyfunc ------------------------------------------------------------------------------
command -v go >/dev/null 2>&1 || { say "go: not found (the machine's Go toolchain is required)"; exit 1; }
gosrc=$INTEROP/go
if up_to_date "$gosrc/bin/verifier" "$gosrc/main.go" "$gosrc/go.mod" "$gosrc/go.sum"; then
  say "go: $gosrc/bin/verifier up to date"
else
  t0=$SECONDS
  say "go: building $gosrc/bin/verifier ($(go version | cut -d' ' -f3))"
  (cd "$gosrc" && go build -mod=readonly -trimpath -o bin/verifier .)
  say "go: built in $((SECONDS - t0))s with $(cd "$gosrc" && go list -m all | tail -n +2 | tr '\n' ' ')"
fi

# --- Java: nimbus-jose-jwt ------------------------------------------------------------------------------------------
command -v javac >/dev/null 2>&1 || { say "java: installing Debian's JDK 17"; apt_install openjdk-17-jdk-headless; }
command -v mvn >/dev/null 2>&1 || { say "java: installing Debian's Maven"; apt_install maven; }
jsrc=$INTEROP/java
if up_to_date "$jsrc/target/verifier.jar" "$jsrc/pom.xml" "$jsrc/src/main/java/interop/Verify.java"; then
  say "java: $jsrc/target/verifier.jar up to date"
else
  t0=$SECONDS
  say "java: resolving the pinned dependencies and plugins (mvn dependency:go-offline), then building offline"
  log=$(mktemp)
  if ! (cd "$jsrc" && mvn -B -Dstyle.color=never dependency:go-offline && mvn -B -Dstyle.color=never -o clean package) >"$log" 2>&1; then
    tail -n 60 "$log"
    say "java: build failed (the last lines of Maven's output are above)"
    exit 1
  fi
  rm -f "$log"
  say "java: built in $((SECONDS - t0))s: $jsrc/target/verifier.jar with $(ls "$jsrc/target/lib" | tr '\n' ' ')"
fi

say "done in ${SECONDS}s"
