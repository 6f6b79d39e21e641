#!/bin/sh
# Installs Quire from this offline bundle, without network: checks every file against SHA256SUMS,
# checks what the packages need from the system, then installs nats-server and quire with dpkg.
#
# usage: sudo ./install.sh [--dry-run] [--without-nats] [--agent]
#   --dry-run       check everything and say what would be installed; change nothing
#   --without-nats  install quire only (a single instance on SQLite needs no NATS)
#   --agent         install for an agent host (quire only; next steps for quire-agent)
set -eu
cd "$(dirname "$0")"

die() {
    echo "install.sh: $*" >&2
    exit 1
}

dry_run=""
with_nats=1
agent=""
for arg in "$@"; do
    case "$arg" in
        --dry-run) dry_run=1 ;;
        --without-nats) with_nats="" ;;
        --agent)
            agent=1
            with_nats=""
            ;;
        -h | --help)
            sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *) die "unknown option \"$arg\" (see --help)" ;;
    esac
done

for tool in sha256sum dpkg dpkg-query; do
    command -v "$tool" >/dev/null || die "$tool is missing: this bundle is for Debian and Ubuntu"
done
[ -f SHA256SUMS ] || die "SHA256SUMS is missing: the bundle is incomplete; nothing was installed"
if ! sha256sum --quiet --strict -c SHA256SUMS; then
    die "checksum mismatch: the bundle is damaged or was altered; nothing was installed"
fi
# Every file of the bundle must be covered, so nothing unverified gets installed.
for f in *.deb image/*; do
    [ -e "$f" ] || continue
    grep -q "  $f\$" SHA256SUMS || die "$f is not listed in SHA256SUMS; nothing was installed"
done

arch=$(dpkg --print-architecture)
[ "$arch" = amd64 ] || die "this bundle is for amd64, this machine is $arch"
for dep in adduser; do
    dpkg-query -W -f '${Status}' "$dep" 2>/dev/null | grep -q "ok installed" \
        || die "the package $dep is missing: install it from your distribution's media first"
done

set -- quire_*.deb
[ -f "$1" ] || die "no quire package in the bundle"
quire_deb=$1
debs=$quire_deb
if [ -n "$with_nats" ]; then
    set -- nats-server_*.deb
    [ -f "$1" ] || die "no nats-server package in the bundle (or use --without-nats)"
    debs="$1 $quire_deb"
fi

if [ -n "$dry_run" ]; then
    echo "checksums verified; dependencies present"
    echo "would run: dpkg -i $debs"
    exit 0
fi
[ "$(id -u)" = 0 ] || die "run as root: sudo ./install.sh"
# shellcheck disable=SC2086 # word splitting intended: a list of package files
dpkg -i $debs
if [ -n "$agent" ]; then
    cat <<'NEXT'

Quire is installed. On an agent host, the report service stays off and quire-agent runs:
  1. configure the agent:   edit /etc/quire/quire.toml ([agent]: server_url, token or
                            QUIRE_AGENT__TOKEN_FILE, and one [[agent.datasources]] per source)
  2. switch services:       systemctl disable quire && systemctl enable --now quire-agent
  3. check it:              quire agent status && journalctl -u quire-agent
NEXT
    exit 0
fi
cat <<'NEXT'

Quire is installed (enabled, not started). Next:
  1. set a root password:   edit /etc/quire/quire.toml ([root_user]) or
                            systemctl edit quire  (Environment=QUIRE_ROOT_USER__PASSWORD=...)
  2. start it:              systemctl start quire
  3. check it:              quire healthcheck && journalctl -u quire
The container image for Docker, Podman or Kubernetes is in image/ (see INSTALL.md).
NEXT
