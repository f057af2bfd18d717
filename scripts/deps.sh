#!/usr/bin/env bash
# Installs what building and testing promd need on a fresh Debian 12 machine (run as root).
# Idempotent: when everything is there it only checks, in about a second.
#
# - Debian packages: systemd-container (systemd-nspawn for the test hosts), etcd-server and
#   etcd-client (the store), dbus, iproute2 (ip netns, veth), nftables (silent partitions),
#   protobuf-compiler and libprotobuf-dev (etcd-client's build: protoc, and the well-known
#   .proto files such as google/protobuf/descriptor.proto, which only libprotobuf-dev ships),
#   util-linux (nsenter, unshare), procps, iputils-ping.
# - Packaging (`make deb`, `make rpm`, tests/system_packaging.rs): build-essential and
#   dpkg-dev (dpkg-buildpackage), debhelper, fakeroot, lintian, rpm (rpmbuild), and man-db
#   with groff-base (`man promd` on the test hosts, which are copies of this machine).
# - prometheus: ships promtool, which checks promd's /metrics output (`promtool check metrics`,
#   tests/http_server.rs and tests/system_metrics.rs) and the shipped alerting rules
#   (`promtool check rules packaging/examples/promd-alerts.yml`). Its service is kept from
#   starting like etcd's.
# - python3-minimal: a Type=notify test service that says READY=1 itself (system_failures),
#   and the web service behind HAProxy (system_haproxy).
# - haproxy: the load balancer in front of the test hosts (tests/system_haproxy.rs,
#   benches/haproxy.rs), health-checking promd's /v1/groups/web/active. The tests run it
#   themselves, in the foreground; the package's own service is kept from starting during the
#   install (policy-rc.d) and stopped and disabled below if it runs anyway.
# - iputils-arping and ndisc6: the floating-address tests (tests/system_addresses.rs) ask who
#   answers for an address on their segment (`arping`, `ndisc6`), as an operator would.
# - keepalived: benches/vip.rs runs it beside promd on the same hosts (VRRP for the same
#   floating addresses). It runs it in the test hosts itself; the package's own service on
#   the machine is kept off like haproxy's.
# - Installing etcd-server must not leave an etcd running on the machine itself: services are
#   kept from starting during the install (policy-rc.d), and if one was started anyway through
#   the package's own service (systemd or /etc/init.d/etcd), it is stopped and disabled.
# - A Rust toolchain with rustfmt and clippy must already be there (it cannot be downloaded).
set -euo pipefail

PACKAGES=(
    systemd-container
    etcd-server
    etcd-client
    dbus
    iproute2
    nftables
    protobuf-compiler
    libprotobuf-dev
    util-linux
    procps
    iputils-ping
    build-essential
    dpkg-dev
    debhelper
    fakeroot
    lintian
    rpm
    man-db
    groff-base
    python3-minimal
    haproxy
    prometheus
    iputils-arping
    ndisc6
    keepalived
)

log() { printf 'deps: %s\n' "$*"; }
die() { printf 'deps: ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (sudo $0)"

missing=()
for p in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [ "$status" = "installed" ] || missing+=("$p")
done

if [ "${#missing[@]}" -eq 0 ]; then
    log "Debian packages already installed"
else
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Keep maintainer scripts from starting services (etcd) on this machine during the install.
    policy=/usr/sbin/policy-rc.d
    made_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# temporary, from promd scripts/deps.sh\nexit 101\n' > "$policy"
        chmod 755 "$policy"
        made_policy=1
        trap 'rm -f "$policy"' EXIT
    fi
    # Retried: the mirror may hiccup, or another apt may hold the lock for a moment.
    apt_opts=(-q -o DPkg::Lock::Timeout=300)
    ok=0
    for try in 1 2 3; do
        if apt-get "${apt_opts[@]}" update \
            && apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}" </dev/null; then
            ok=1
            break
        fi
        log "apt-get failed (try $try of 3)"
        sleep $((try * 10))
    done
    [ "$ok" -eq 1 ] || die "could not install: ${missing[*]}"
    if [ "$made_policy" -eq 1 ]; then
        rm -f "$policy"
        trap - EXIT
    fi
fi

# If the etcd package's own service runs on this machine, stop and disable it: tests start
# their own etcd members on their own ports. Other processes are not touched.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    # systemd is PID 1 here.
    if systemctl is-active --quiet etcd.service 2>/dev/null || systemctl is-enabled --quiet etcd.service 2>/dev/null; then
        log "stopping and disabling the machine's etcd.service"
        systemctl disable --now etcd.service
    fi
elif [ -x /etc/init.d/etcd ]; then
    # No systemd as PID 1: the package's sysv script starts etcd with a pidfile.
    for pidfile in /run/etcd.pid /var/run/etcd.pid; do
        if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null \
            && [ "$(readlink -f "/proc/$(cat "$pidfile")/exe" 2>/dev/null)" = /usr/bin/etcd ]; then
            log "stopping the etcd that the package's init script started"
            /etc/init.d/etcd stop || true
            break
        fi
    done
    if command -v update-rc.d >/dev/null; then
        update-rc.d etcd disable >/dev/null 2>&1 || true
    fi
fi
# The same for haproxy's and prometheus's own services: the tests run their own haproxy in the
# foreground and use only promtool from the prometheus package, and the test hosts that boot a
# copy of this machine (tests/support/installhost.rs) must not start either. Offline
# (`--root=/`) when systemd is not PID 1; the sysv links as well.
keep_service_off() {
    local name=$1 exe=$2
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
        if systemctl is-active --quiet "$name.service" 2>/dev/null || systemctl is-enabled --quiet "$name.service" 2>/dev/null; then
            log "stopping and disabling the machine's $name.service"
            systemctl disable --now "$name.service"
        fi
        return
    fi
    if [ -e "/etc/systemd/system/multi-user.target.wants/$name.service" ]; then
        log "disabling the machine's $name.service"
        systemctl --root=/ disable "$name.service" >/dev/null 2>&1 \
            || rm -f "/etc/systemd/system/multi-user.target.wants/$name.service"
    fi
    if [ -s "/run/$name.pid" ] && kill -0 "$(cat "/run/$name.pid")" 2>/dev/null \
        && [ "$(readlink -f "/proc/$(cat "/run/$name.pid")/exe" 2>/dev/null)" = "$exe" ]; then
        log "stopping the $name that the package's init script started"
        "/etc/init.d/$name" stop || true
    fi
    if command -v update-rc.d >/dev/null && ls /etc/rc[2-5].d/S*"$name" >/dev/null 2>&1; then
        update-rc.d "$name" disable >/dev/null 2>&1 || true
    fi
}
keep_service_off haproxy /usr/sbin/haproxy
keep_service_off prometheus /usr/bin/prometheus
keep_service_off keepalived /usr/sbin/keepalived
if ss -Hltn 'sport = :2379' 2>/dev/null | grep -q .; then
    log "WARNING: something (not the etcd package's service) listens on port 2379:"
    ss -ltnp 'sport = :2379' || true
fi

for tool in systemd-nspawn nsenter unshare ip nft etcd etcdctl dbus-daemon protoc \
    dpkg-buildpackage dh lintian rpmbuild man haproxy promtool keepalived; do
    command -v "$tool" >/dev/null || die "$tool is missing after the install"
done

# Rust: the machine's toolchain (rustup). Under sudo, PATH may lack ~/.cargo/bin.
if ! command -v cargo >/dev/null; then
    for d in "${CARGO_HOME:-}/bin" "$HOME/.cargo/bin" /root/.cargo/bin /usr/local/cargo/bin; do
        if [ -x "$d/cargo" ]; then export PATH="$d:$PATH"; break; fi
    done
fi
command -v cargo >/dev/null || die "no cargo: install a Rust toolchain (rustup) first"
log "$(cargo --version)"
cargo fmt --version >/dev/null 2>&1 || die "rustfmt is missing (rustup component add rustfmt)"
cargo clippy --version >/dev/null 2>&1 || die "clippy is missing (rustup component add clippy)"
log "ready"
