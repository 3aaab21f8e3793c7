#!/usr/bin/env bash
# Checks the deployment files without a Docker engine: helm lint/template of the chart (defaults and
# helm/ci-values/*.yaml), schema rejection of helm/ci-values/invalid/*.yaml, and docker-compose.yml
# through Compose's own parser. Needs helm and docker-compose (.ci/install-tools.sh installs them).
set -uo pipefail
cd "$(dirname "$0")/.."

chart=helm/jwks-signer
passed=0
failed=0
pass() { passed=$((passed + 1)); echo "ok    $*"; }
fail() { failed=$((failed + 1)); echo "FAIL  $*"; }

find_helm() {
  local candidate
  for candidate in "$(command -v helm 2>/dev/null)" "$HOME/go/bin/helm" "$(go env GOBIN 2>/dev/null)/helm" \
    "$(go env GOPATH 2>/dev/null)/bin/helm"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then echo "$candidate"; return 0; fi
  done
  return 1
}
helm=$(find_helm) || { echo "check-deploy: helm not found; run .ci/install-tools.sh" >&2; exit 1; }
command -v docker-compose >/dev/null 2>&1 || { echo "check-deploy: docker-compose not found; run .ci/install-tools.sh" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for values in "" helm/ci-values/*.yaml; do
  label=${values:-defaults}
  args=()
  [ -n "$values" ] && args=(-f "$values")
  if "$helm" lint --strict "$chart" "${args[@]}" >"$work/lint.log" 2>&1; then
    pass "helm lint --strict ($label)"
  else
    fail "helm lint --strict ($label)"; cat "$work/lint.log"
  fi
  if "$helm" template rel "$chart" --namespace jwks "${args[@]}" >"$work/out.yaml" 2>"$work/err.log"; then
    pass "helm template ($label): $(grep -c '^kind:' "$work/out.yaml") objects"
  else
    fail "helm template ($label)"; cat "$work/err.log"
  fi
done

for values in helm/ci-values/invalid/*.yaml; do
  expect=$(sed -n 's/^# expect: //p' "$values")
  if [ -z "$expect" ]; then
    fail "$values has no '# expect: <schema error>' line"; continue
  fi
  if "$helm" template rel "$chart" -f "$values" >/dev/null 2>"$work/err.log"; then
    fail "$values was accepted"
  elif grep -q "values don't meet the specifications of the schema" "$work/err.log" && grep -qF -- "$expect" "$work/err.log"; then
    pass "schema rejects $values"
  else
    fail "$values failed, but not with the schema error \"$expect\""; cat "$work/err.log"
  fi
done

# Compose: the committed .env.example (empty secrets) must be refused, a filled one accepted.
cp .env.example "$work/.env"
if docker-compose -f docker-compose.yml --env-file "$work/.env" config -q >/dev/null 2>"$work/err.log"; then
  fail "docker-compose accepted .env.example with empty secrets"
else
  pass "docker-compose refuses empty secrets ($(head -c 80 "$work/err.log"))"
fi
kek=$(node -e "process.stdout.write(require('node:crypto').randomBytes(32).toString('base64'))")
token_hash=$(node -e "process.stdout.write(require('node:crypto').randomBytes(32).toString('hex'))")
redis_password=$(node -e "process.stdout.write(require('node:crypto').randomBytes(24).toString('hex'))")
sed -e "s|^KEY_ENCRYPTION_KEYS=.*|KEY_ENCRYPTION_KEYS=k1:$kek|" \
    -e "s|^API_TOKEN_SHA256=.*|API_TOKEN_SHA256=$token_hash|" \
    -e "s|^REDIS_PASSWORD=.*|REDIS_PASSWORD=$redis_password|" .env.example >"$work/.env"
if docker-compose -f docker-compose.yml --env-file "$work/.env" config -q 2>"$work/err.log"; then
  pass "docker-compose config -q"
else
  fail "docker-compose config -q"; cat "$work/err.log"
fi

echo "deploy: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
