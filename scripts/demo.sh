#!/usr/bin/env bash
# A live promd cluster on this machine: 3 systemd hosts in nspawn containers and a 3-member
# etcd; shows the active host, a failover when it is cut off, and a planned hand-over.
# Run as root: sudo scripts/demo.sh. Installs what it needs on a fresh Debian machine.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
    echo "demo.sh: needs root (it boots containers); run: sudo $0" >&2
    exit 2
fi
scripts/deps.sh
export PATH="$HOME/.cargo/bin:/root/.cargo/bin:$PATH"
# promd and promctl: the demo installs both on its hosts.
cargo build --release --bins
# The demo itself in the ci profile, which unwinds: a panic in the demo (the release profile
# aborts) would leave its containers, namespaces and etcd behind instead of dropping them.
PROMD_BIN="$(pwd)/target/release/promd" cargo run --profile ci --example demo
