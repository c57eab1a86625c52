#!/bin/sh
# Install kei as a system service, in one command (run from a clone):
#
#     sudo sh systemd/install.sh [path/to/keiconf.py]
#
# * installs the two run-time dependencies from the distribution (apt);
# * creates the system user "kei" (in "dialout", for the serial ports);
# * creates the work directory /var/lib/kei owned by kei, and copies the
#   config there (mode 0640: it holds the Route-B password), unless one is
#   there already;
# * checks the config as the kei user (kei.py --check);
# * installs systemd/kei.service with this clone's path, enables and starts it.
#
# The log is /var/lib/kei/kei.log (journalctl -u kei shows only the service
# starting and stopping, and what kei prints if it cannot start).
#
# For tests, the places can be moved: KEI_USER, KEI_STATE_DIR, KEI_UNIT_DIR,
# KEI_SYSTEMCTL (a command run instead of systemctl).
set -eu

code_dir=$(cd "$(dirname "$0")/.." && pwd)
user=${KEI_USER:-kei}
state_dir=${KEI_STATE_DIR:-/var/lib/kei}
unit_dir=${KEI_UNIT_DIR:-/etc/systemd/system}
systemctl=${KEI_SYSTEMCTL:-systemctl}
config=${1:-keiconf.py}

say() { echo "kei install: $*"; }
fail() { echo "kei install: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || fail "run me as root: sudo sh $0 $*"
[ -f "$code_dir/kei.py" ] || fail "$code_dir is not a kei clone (no kei.py)"
if [ ! -f "$state_dir/keiconf.py" ] && [ ! -f "$config" ]; then
    fail "no config at $config: make one first (cp keiconf_broute.py keiconf.py, then edit it),
or name it: sudo sh $0 path/to/keiconf.py"
fi

# 1. Run-time dependencies for the system's Python.
if ! /usr/bin/python3 -c "import serial, requests" 2>/dev/null; then
    command -v apt-get >/dev/null 2>&1 || fail "install pyserial and requests for /usr/bin/python3"
    say "installing python3-serial and python3-requests"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-serial python3-requests >/dev/null
fi

# 1b. Byte-compile the code, as the clone's owner: the service user may not
# write __pycache__ there, and would then compile every module at every start
# (slower, and more memory).  After a git pull, run this script again.
owner=$(stat -c %U "$code_dir")
as_owner=""
if [ "$owner" != "$(id -un)" ] && command -v runuser >/dev/null 2>&1; then
    as_owner="runuser -u $owner --"
fi
$as_owner /usr/bin/python3 -m compileall -q "$code_dir/keilib" >/dev/null ||
    say "could not byte-compile $code_dir/keilib as $owner (kei still runs, compiling at each start)"

# 2. The user, allowed to open serial ports.
if ! id "$user" >/dev/null 2>&1; then
    say "creating the system user $user"
    useradd --system --home-dir "$state_dir" --shell /usr/sbin/nologin "$user"
fi
if getent group dialout >/dev/null 2>&1; then
    usermod -aG dialout "$user"
fi
group=$(id -gn "$user")

# 3. The work directory and the config (kept if one is there: never overwritten).
install -d -o "$user" -g "$group" -m 0755 "$state_dir"
if [ -f "$state_dir/keiconf.py" ]; then
    say "keeping the config already in $state_dir/keiconf.py"
else
    install -o "$user" -g "$group" -m 0640 "$config" "$state_dir/keiconf.py"
    say "config copied to $state_dir/keiconf.py (owner $user, mode 0640)"
fi

# 4. The config must be good before systemd starts it in a loop.
if command -v runuser >/dev/null 2>&1 && [ "$user" != "$(id -un)" ]; then
    as_user="runuser -u $user --"
else
    as_user=""
fi
(cd "$state_dir" && $as_user /usr/bin/python3 "$code_dir/kei.py" --check) ||
    fail "the config does not pass kei.py --check (see above); fix $state_dir/keiconf.py and run me again"

# 5. The unit, pointing at this clone.  ProtectHome=yes hides /home (and
# /root, /run/user) from the service: a clone there (/home/pi/kei) must stay
# readable, so home directories become read-only instead of hidden.
protect_home=yes
case "$code_dir/" in
    /home/*|/root/*|/run/user/*) protect_home=read-only ;;
esac
sed -e "s#/opt/kei#$code_dir#g" -e "s#/var/lib/kei#$state_dir#g" \
    -e "s#^User=kei#User=$user#" -e "s#^Group=kei#Group=$group#" \
    -e "s#^ProtectHome=yes#ProtectHome=$protect_home#" \
    "$code_dir/systemd/kei.service" > "$unit_dir/kei.service"
say "unit installed: $unit_dir/kei.service"
$systemctl daemon-reload
$systemctl enable --now kei
say "kei runs.  Its log: tail -f $state_dir/kei.log   State: systemctl status kei"
