#!/usr/bin/env bash
# Installs schemathesis (pinned, from PyPI) into test/fuzz/.venv for test/fuzz/schemathesis.test.ts. Idempotent;
# a venv left half-built by an interrupted install is rebuilt.
set -euo pipefail
cd "$(dirname "$0")/../test/fuzz"
stamp=.venv/.requirements
if [ -f "$stamp" ] && cmp -s requirements.txt "$stamp" && .venv/bin/st --version >/dev/null 2>&1; then
  echo "fuzz-deps: up to date ($(.venv/bin/st --version))"
  exit 0
fi
rm -rf .venv
python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
.venv/bin/st --version >/dev/null
cp requirements.txt "$stamp"
echo "fuzz-deps: installed $(.venv/bin/st --version)"
