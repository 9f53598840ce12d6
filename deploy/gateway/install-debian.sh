#!/bin/bash
# Install a siteclock gateway on a Debian 12 server, from nothing to a running, checked service.
#
#   sudo deploy/gateway/install-debian.sh --hostname gw.example.be
#   sudo deploy/gateway/install-debian.sh --hostname gw.example.be --ciao-sim 8787   # a trial site
#
# What it does, in order (every step is safe to run again):
#   1. hw/pi/install.sh --role gateway: Debian packages (python3-venv, mosquitto), the service
#      user, /etc/siteclock and /var/lib/siteclock, the virtual environment, the units for the
#      broker, the gateway and the enrolment endpoint (Debian's mosquitto.service disabled).
#   2. siteclock gateway init: broker files owned for the broker's user, site PKI, keys,
#      a commented /etc/siteclock/gateway.toml and the enrolment endpoint's arguments (kept as
#      they are when they exist already).
#   3. systemctl start of the three units, then siteclock gateway check.
#
# Testing: SITECLOCK_ROOT=/some/dir works as for hw/pi/install.sh: files land under it and the
# commands that change the system are written to $SITECLOCK_ROOT/install-actions.log.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PI_INSTALL="$HERE/../../hw/pi/install.sh"
HOSTNAME_ARG=""
CIAO_SIM=""
PASS=()

usage() {
    sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'
    echo "options: --hostname NAME (required)  --ciao-sim PORT  --source PATH_OR_REQUIREMENT"
}

while [ $# -gt 0 ]; do
    case "$1" in
        --hostname) HOSTNAME_ARG="${2:-}"; shift 2 ;;
        --ciao-sim) CIAO_SIM="${2:-}"; shift 2 ;;
        --source) PASS+=(--source "${2:-}"); shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install-debian.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
if [ -z "$HOSTNAME_ARG" ]; then
    echo "install-debian.sh: --hostname is required: the name terminals use to reach this server" >&2
    exit 2
fi

ROOT="${SITECLOCK_ROOT:-/}"
ROOT="${ROOT%/}"
act() {
    if [ -n "$ROOT" ]; then
        echo "$*" >> "$ROOT/install-actions.log"
    else
        "$@"
    fi
}
say() { echo "siteclock gateway install: $*"; }

"$PI_INSTALL" --role gateway --no-boot-config "${PASS[@]}"

INIT=(/usr/local/bin/siteclock gateway init --hostname "$HOSTNAME_ARG")
[ -z "$CIAO_SIM" ] || INIT+=(--ciao-sim "$CIAO_SIM")
if [ -f "$ROOT/etc/siteclock/gateway.toml" ]; then
    say "/etc/siteclock/gateway.toml exists: kept (siteclock gateway init --force rewrites it)"
else
    say "gateway init for $HOSTNAME_ARG"
    act "${INIT[@]}"
fi

UNITS="siteclock-broker.service siteclock-gateway.service siteclock-enrolment.service"
act systemctl start $UNITS
act /usr/local/bin/siteclock gateway check --config /etc/siteclock/gateway.toml
say "done: enrolment endpoint on https://$HOSTNAME_ARG:8443; next, for each worksite:"
say "  siteclock provision token create --db /var/lib/siteclock/gateway.db --workplace <DoW> \\"
say "      --broker-dir /etc/siteclock/broker --broker-host $HOSTNAME_ARG \\"
say "      --gateway-url https://$HOSTNAME_ARG:8443"
