#!/bin/bash
# Install siteclock on Raspberry Pi OS Bookworm (or any Debian 12): a terminal or a gateway.
#
#   sudo hw/pi/install.sh                       # terminal, siteclock from this source tree
#   sudo hw/pi/install.sh --role gateway
#   sudo hw/pi/install.sh --source siteclock-0.1.0-py3-none-any.whl
#
# What it does, in order (every step is safe to run again):
#   1. Debian packages: python3-venv, libusb-1.0-0 (USB readers); mosquitto for a gateway.
#   2. The service user "siteclock" (system user, no login, no home), member of exactly the
#      groups it needs: dialout (UART / USB-serial readers) and gpio (LED, buzzer, buttons) on a
#      terminal; none on a gateway.
#   3. Directories: /opt/siteclock (code, root-owned), /etc/siteclock (root:siteclock 0750) and
#      /var/lib/siteclock (siteclock 0700), the only writable path: config, key, outbox.
#      On a read-only (overlay) root, mount a persistent partition there first.
#   4. A virtual environment /opt/siteclock/venv with siteclock installed into it, and a
#      /usr/local/bin/siteclock link for the installer.
#   5. systemd units (terminal: siteclock-terminal; gateway: siteclock-broker, siteclock-gateway,
#      siteclock-enrolment, and Debian's own mosquitto.service disabled), udev rules for USB
#      readers, the NFC module blacklist, and (terminal) the UART boot configuration for a
#      PN532 on GPIO14/15 with the serial console removed.
#   6. systemctl daemon-reload, enable the units (each starts once its config exists), reload
#      udev. A Debian server: deploy/gateway/install-debian.sh runs this, then gateway init.
#
# Testing: SITECLOCK_ROOT=/some/dir makes every file land under that directory instead of /, and
# the commands that change the system (apt-get, useradd, usermod, chown, python -m venv, pip,
# systemctl, udevadm) are not run but written, one per line, to $SITECLOCK_ROOT/install-actions.log.
set -euo pipefail

ROLE=terminal
SOURCE=""
BOOT_CONFIG=yes
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

usage() {
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
    echo "options: --role terminal|gateway  --source PATH_OR_REQUIREMENT  --no-boot-config"
}

while [ $# -gt 0 ]; do
    case "$1" in
        --role) ROLE="${2:-}"; shift 2 ;;
        --source) SOURCE="${2:-}"; shift 2 ;;
        --no-boot-config) BOOT_CONFIG=no; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
    esac
done

case "$ROLE" in
    terminal|gateway) ;;
    *) echo "install.sh: --role must be 'terminal' or 'gateway', not '$ROLE'" >&2; exit 2 ;;
esac

ROOT="${SITECLOCK_ROOT:-/}"
ROOT="${ROOT%/}"                 # "" for the real root, "/some/dir" for a fake one
SERVICE_USER=siteclock
if [ "$ROLE" = terminal ]; then
    SERVICE_GROUPS="dialout,gpio"
    PACKAGES="python3-venv libusb-1.0-0"
else
    SERVICE_GROUPS=""
    PACKAGES="python3-venv mosquitto"
fi
OPT=/opt/siteclock
VENV=$OPT/venv
ETC=/etc/siteclock
DATA=/var/lib/siteclock
# Default source: the checkout this script lives in (hw/pi/ -> repository root).
[ -n "$SOURCE" ] || SOURCE="$(cd "$HERE/../.." && pwd)"

if [ -n "$ROOT" ]; then
    FAKE=yes
    ACTIONS="$ROOT/install-actions.log"
    mkdir -p "$ROOT"
    : > "$ACTIONS"
else
    FAKE=no
    if [ "$(id -u)" != 0 ]; then
        echo "install.sh: run as root (sudo $0 $*)" >&2
        exit 1
    fi
    if ! grep -q '^VERSION_CODENAME=bookworm' /etc/os-release 2>/dev/null; then
        echo "install.sh: warning: tested on Debian/Raspberry Pi OS 12 (bookworm) only" >&2
    fi
fi

say() { echo "siteclock install: $*"; }

# A command that changes the system: run it for real, or record it under a fake root.
act() {
    if [ "$FAKE" = yes ]; then
        echo "$*" >> "$ACTIONS"
    else
        "$@"
    fi
}

# Copy a file from this folder to an absolute target path (under the root), with a mode.
put() {
    local src="$1" dst="$ROOT$2" mode="$3"
    mkdir -p "$(dirname "$dst")"
    install -m "$mode" "$src" "$dst"
}

# --------------------------------------------------------------------------- 1. packages
say "packages: $PACKAGES"
act apt-get install -y --no-install-recommends $PACKAGES

# --------------------------------------------------------------------------- 2. user
say "service user $SERVICE_USER, groups: ${SERVICE_GROUPS:-none}"
if [ "$FAKE" = yes ] || ! getent passwd "$SERVICE_USER" >/dev/null; then
    act useradd --system --user-group --no-create-home --home-dir "$DATA" \
        --shell /usr/sbin/nologin "$SERVICE_USER"
fi
if [ -n "$SERVICE_GROUPS" ]; then
    for group in ${SERVICE_GROUPS//,/ }; do
        # gpio exists on Raspberry Pi OS; create it elsewhere so the install still completes.
        if [ "$FAKE" = yes ] || ! getent group "$group" >/dev/null; then
            act groupadd --system --force "$group"
        fi
    done
fi
# --groups sets the exact list (replacing any other supplementary group): least privilege.
act usermod --groups "$SERVICE_GROUPS" "$SERVICE_USER"

# --------------------------------------------------------------------------- 3. directories
say "directories $OPT, $ETC, $DATA"
install -d -m 0755 "$ROOT$OPT"
install -d -m 0750 "$ROOT$ETC"
install -d -m 0700 "$ROOT$DATA"
act chown root:"$SERVICE_USER" "$ETC"
act chown "$SERVICE_USER":"$SERVICE_USER" "$DATA"
if [ "$ROLE" = gateway ]; then
    # The INSS key lives apart from the database: a copy or backup of $DATA carries no key.
    install -d -m 0700 "$ROOT$ETC/keys"
    act chown "$SERVICE_USER":"$SERVICE_USER" "$ETC/keys"
fi

# --------------------------------------------------------------------------- 4. venv
say "virtual environment $VENV from $SOURCE"
act python3 -m venv "$VENV"
act "$VENV/bin/pip" install --no-cache-dir --upgrade "$SOURCE"
mkdir -p "$ROOT/usr/local/bin"
ln -sfn "$VENV/bin/siteclock" "$ROOT/usr/local/bin/siteclock"

# --------------------------------------------------------------------------- 5. system files
if [ "$ROLE" = terminal ]; then
    UNITS="siteclock-terminal.service"
else
    # Every long-running part of a gateway server has its unit.
    UNITS="siteclock-broker.service siteclock-gateway.service siteclock-enrolment.service"
fi
say "systemd units $UNITS"
for unit in $UNITS; do
    put "$HERE/$unit" "/etc/systemd/system/$unit" 0644
done
if [ "$ROLE" = terminal ]; then
    say "udev rules and NFC module blacklist for USB readers"
    put "$HERE/60-siteclock-readers.rules" /etc/udev/rules.d/60-siteclock-readers.rules 0644
    put "$HERE/blacklist-nfc.conf" /etc/modprobe.d/blacklist-nfc.conf 0644
    put "$HERE/WIRING.md" "$OPT/WIRING.md" 0644
fi

BOOT_DIR="$ROOT/boot/firmware"
[ -d "$BOOT_DIR" ] || BOOT_DIR="$ROOT/boot"     # before Bookworm the files were in /boot
if [ "$ROLE" = terminal ] && [ "$BOOT_CONFIG" = yes ] && [ -f "$BOOT_DIR/config.txt" ]; then
    say "UART for the PN532 in $BOOT_DIR/config.txt (reboot needed)"
    config="$BOOT_DIR/config.txt"
    # Replace our block if present, else append it: running twice leaves one block.
    tmp="$(mktemp)"
    sed '/^# BEGIN siteclock$/,/^# END siteclock$/d' "$config" > "$tmp"
    { cat "$tmp"; echo "# BEGIN siteclock"; cat "$HERE/boot-config.txt"; echo "# END siteclock"; } > "$config"
    rm -f "$tmp"
    cmdline="$BOOT_DIR/cmdline.txt"
    if [ -f "$cmdline" ]; then
        # The serial console would print kernel messages into the reader and read its replies
        # as logins; the reader needs the UART to itself.
        sed -i -E 's/(^| )console=(serial0|ttyAMA0|ttyS0),[0-9]+//g; s/^ +//' "$cmdline"
    fi
    act systemctl disable hciuart.service
fi

# --------------------------------------------------------------------------- 6. activate
if [ "$ROLE" = gateway ]; then
    # One broker per server: ours runs the site's configuration (siteclock-broker.service).
    act systemctl disable --now mosquitto.service
fi
act systemctl daemon-reload
act systemctl enable $UNITS
if [ "$ROLE" = terminal ]; then
    act udevadm control --reload-rules
    act udevadm trigger --subsystem-match=usb
fi

say "done."
if [ "$ROLE" = terminal ]; then
    say "next: siteclock provision run --gateway https://<gateway>:8443 --terminal-id <id> \\"
    say "        --workplace <DoW reference or QR URL> --coordinates '<lat>, <lon>' \\"
    say "        --ca-fingerprint <from the employer> --reader tty:AMA0:pn532"
    say "(it asks for the enrolment token; the unit starts once /var/lib/siteclock/terminal.toml exists)"
else
    say "next: siteclock gateway init --hostname <name terminals use for this server>"
    say "      systemctl start $UNITS"
    say "      siteclock gateway check --config /etc/siteclock/gateway.toml"
fi
