#!/bin/sh
# The Quick start in one command (README): the distribution's packages kei
# needs, then the demo.
#
#     sh demo.sh            (any arguments go to kei.py --demo)
#
# * On Debian, Raspberry Pi OS and Ubuntu it installs what is missing with
#   apt: python3-serial and python3-requests for the system's Python, and
#   php-cli for the graph page (as root, or through sudo).  Bookworm and later
#   refuse pip in the system's Python (PEP 668), hence apt.
# * It runs the demo with the system's Python (/usr/bin/python3), which is the
#   one those packages are for, even inside an activated virtual environment.
# * Elsewhere (no apt) it runs the demo with the python3 on PATH if that one
#   has pyserial and requests, else it says what to do.
set -eu
cd "$(dirname "$0")"

say() { echo "kei demo: $*"; }

has_packages() { "$1" -c "import serial, requests" 2>/dev/null; }

if command -v apt-get >/dev/null 2>&1 && [ -x /usr/bin/python3 ]; then
    missing=""
    has_packages /usr/bin/python3 || missing="python3-serial python3-requests"
    command -v php >/dev/null 2>&1 || missing="$missing php-cli"
    if [ -n "$missing" ]; then
        if [ "$(id -u)" -eq 0 ]; then
            as_root=""
        elif command -v sudo >/dev/null 2>&1; then
            as_root="sudo"
        else
            say "needs$missing; run this as root once (su -c 'sh demo.sh'), or install them"
            exit 1
        fi
        say "installing$missing (apt)"
        # A fresh system may have no package lists yet: fetch them and try again.
        $as_root apt-get install -y -q $missing ||
            { $as_root apt-get update -q && $as_root apt-get install -y -q $missing; }
    fi
    exec /usr/bin/python3 kei.py --demo "$@"
fi

if has_packages python3; then
    exec python3 kei.py --demo "$@"
fi
say "no apt here, and this python3 lacks pyserial or requests; use a virtual environment:"
say "python3 -m venv .venv && .venv/bin/pip install -r requirements.txt && .venv/bin/python kei.py --demo"
exit 1
