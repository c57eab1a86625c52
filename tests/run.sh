#!/usr/bin/env bash
# The test suite, from a fresh clone, on Debian 12 / Raspberry Pi OS / Ubuntu:
#
#     bash tests/run.sh [pytest options]
#
# 1. installs the system packages the tests start for real (php -S, the
#    servers outputs write to, a browser for the graph page), with sudo unless
#    run as root; a package the system does not offer (chromium on some
#    Ubuntu releases) is left out, and its tests skip with the reason;
# 2. makes a virtual environment in .venv (Debian 12 and later refuse pip
#    into the system's Python, PEP 668) with requirements-dev.txt in it;
# 3. runs pytest there.
set -euo pipefail
cd "$(dirname "$0")/.."

# Needed: the suite fails without them.  (python3-serial and python3-requests:
# the README's Quick start (demo.sh), which a test runs, takes them for the system's Python;
# tzdata: the graph page tests choose time zones; openssl: the alert mail
# tests make a self-signed certificate for their STARTTLS server; iproute2: the
# IPv6 ECHONET Lite test makes a veth link in its network namespace.)
required=(php-cli python3-venv python3-serial python3-requests tzdata systemd iproute2
          mosquitto victoria-metrics influxdb prometheus postgresql openssl)
# Wanted: tests that need them skip, saying so, when the system has none.
optional=(chromium chromium-driver fonts-dejavu-core)

as_root=()
[ "$(id -u)" -eq 0 ] || as_root=(sudo)
missing() { for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || echo "$p"; done; }
need=($(missing "${required[@]}"))
want=($(missing "${optional[@]}"))
if [ ${#need[@]} -gt 0 ] || [ ${#want[@]} -gt 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "tests/run.sh: install these packages, then run me again: ${need[*]} ${want[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${as_root[@]}" apt-get update -qq
    if [ ${#need[@]} -gt 0 ]; then
        "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    fi
    for p in "${want[@]}"; do
        "${as_root[@]}" apt-get install -y -qq --no-install-recommends "$p" >/dev/null 2>&1 ||
            echo "tests/run.sh: $p is not available here; the tests that need it will skip" >&2
    done
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
exec .venv/bin/python -m pytest "$@"
