#!/usr/bin/env bash
# Installs every system package the test suite needs (Debian; prometheus
# provides promtool for tests/deploy.rs; git, with `git daemon` and `git
# http-backend`, serves the repositories of the manifest source tests; postgresql
# is the server the PostgreSQL store tests start as an unprivileged user; chromium
# and chromium-driver run the status page tests in headless Chromium, with
# fonts-liberation for the text of its screenshot). Idempotent:
# skips apt entirely when everything is already there.
set -euo pipefail

packages=(docker-registry skopeo openssl prometheus prometheus-alertmanager git postgresql chromium chromium-driver fonts-liberation)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-test-deps: all present (${packages[*]})"
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update
$sudo apt-get install -y --no-install-recommends "${missing[@]}"
