#!/usr/bin/env bash
# Installs Debian's `chromium` package (used by the report's browser test), idempotently: does nothing when
# /usr/bin/chromium is already there, and refreshes the package lists only when they do not know chromium
# or name a version the mirror no longer has. Needs root (apt-get); Debian's package is the only browser
# these machines can install.
set -euo pipefail
[ -x /usr/bin/chromium ] && exit 0
export DEBIAN_FRONTEND=noninteractive
install() { apt-get install -y -qq --no-install-recommends chromium >/dev/null; }
if ! apt-cache show chromium >/dev/null 2>&1 || ! install; then
    apt-get update -qq
    install
fi
/usr/bin/chromium --version
