#!/usr/bin/env bash
# The one builder of Debian roots for drover's test beds (Slurm generations, the Kubernetes
# apiextensions-apiserver). A root is built with `debootstrap --variant=minbase` from the
# mirror apt uses here, then the named packages are installed with --no-install-recommends.
#
#   scripts/debian-root.sh path  NAME SUITE PKG...   print the cached root's path (no build)
#   scripts/debian-root.sh build NAME SUITE PKG...   build it unless cached; print its path
#   scripts/debian-root.sh mount ROOT                mount proc, dev, dev/pts, sys (ro) and
#                                                    /tmp into ROOT (idempotent)
#   scripts/debian-root.sh umount ROOT               undo `mount`
#
# Cache: $DROVER_CACHE_DIR (default /var/cache/drover)/roots/NAME-KEY, where KEY hashes the
# suite, the package list and this script's recipe. A finished root holds `.drover-versions`
# (the resolved package versions, `dpkg-query -W`); a root without it is incomplete and is
# rebuilt. Builds take a lock per root, so concurrent callers build it once. Must run as root.
set -euo pipefail

CACHE="${DROVER_CACHE_DIR:-/var/cache/drover}/roots"
# Bump when the recipe below changes in a way that needs new roots.
RECIPE=1

log() { echo "debian-root: $*" >&2; }
die() { log "error: $*"; exit 1; }

# The mirror apt uses on this host (deb.debian.org when none is configured).
mirror() {
    local m
    m=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | grep -v security | head -n 1)
    echo "${m:-http://deb.debian.org/debian}"
}

# apt options inside a root: sid's Release file may be past its Valid-Until date.
apt_opts() { echo "-o Acquire::Check-Valid-Until=false -o Acquire::Retries=3"; }

key_of() {
    local name=$1 suite=$2
    shift 2
    printf '%s\n' "$RECIPE" "$suite" "$@" | sort | sha256sum | cut -c1-12
}

root_path() {
    local name=$1 suite=$2
    shift 2
    echo "$CACHE/$name-$(key_of "$name" "$suite" "$@")"
}

ensure_debootstrap() {
    command -v debootstrap >/dev/null && return 0
    log "installing debootstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
}

# Runs CMD... inside ROOT with the virtual filesystems mounted (for package installs).
in_root() {
    local root=$1
    shift
    chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
        LANG=C.UTF-8 HOME=/root "$@"
}

cmd_build() {
    [[ $(id -u) -eq 0 ]] || die "run as root"
    local name=$1 suite=$2
    shift 2
    local root
    root=$(root_path "$name" "$suite" "$@")
    mkdir -p "$CACHE"
    exec 9>"$root.lock"
    flock 9
    if [[ -s $root/.drover-versions ]]; then
        echo "$root"
        return 0
    fi
    ensure_debootstrap
    local tmp="$root.building"
    if mountpoint -q "$tmp/proc" 2>/dev/null; then cmd_umount "$tmp"; fi
    rm -rf "$tmp"
    log "building $name ($suite: $*) in $root; this takes a few minutes"
    local started=$SECONDS
    debootstrap --variant=minbase "$suite" "$tmp" "$(mirror)" >"$tmp.log" 2>&1 ||
        { tail -n 30 "$tmp.log" >&2; die "debootstrap $suite failed (log: $tmp.log)"; }
    # Package scripts must not start daemons inside the root.
    printf '#!/bin/sh\nexit 101\n' >"$tmp/usr/sbin/policy-rc.d"
    chmod 755 "$tmp/usr/sbin/policy-rc.d"
    cp /etc/resolv.conf "$tmp/etc/resolv.conf" 2>/dev/null || true
    printf '127.0.0.1 localhost\n::1 localhost\n' >"$tmp/etc/hosts"
    mount -t proc proc "$tmp/proc"
    # shellcheck disable=SC2046
    if ! in_root "$tmp" apt-get $(apt_opts) update -qq >>"$tmp.log" 2>&1 ||
        ! in_root "$tmp" apt-get $(apt_opts) install -y -qq --no-install-recommends "$@" >>"$tmp.log" 2>&1; then
        umount "$tmp/proc"
        tail -n 30 "$tmp.log" >&2
        die "installing packages into $name failed (log: $tmp.log)"
    fi
    in_root "$tmp" apt-get clean
    umount "$tmp/proc"
    in_root "$tmp" dpkg-query -W >"$tmp/.drover-versions"
    mv "$tmp" "$root"
    mv "$tmp.log" "$root.log"
    log "built $name in $((SECONDS - started)) s"
    echo "$root"
}

# mount_once TARGET ARGS...: mounts unless TARGET is already a mount point.
mount_once() {
    local target=$1
    shift
    mountpoint -q "$target" || mount "$@" "$target"
}

cmd_mount() {
    local root=$1
    [[ -d $root ]] || die "no root at $root"
    mount_once "$root/proc" -t proc proc
    mount_once "$root/dev" --bind /dev
    mount_once "$root/dev/pts" --bind /dev/pts
    if ! mountpoint -q "$root/sys"; then
        # rbind keeps /sys/fs/cgroup, which slurmd 22.05 needs.
        mount --rbind /sys "$root/sys"
        mount -o remount,bind,ro "$root/sys"
    fi
    # Tests, jobs and daemons share one path: /tmp (state dirs, test tempdirs, and what a job
    # runs) is the same inside the root as outside. The checkout is not mounted: where CI
    # clones it (perhaps under a private directory) must not matter to jobs.
    mount_once "$root/tmp" --bind /tmp
}

cmd_umount() {
    local root=$1 m
    for m in /tmp /sys /dev/pts /dev /proc; do
        if mountpoint -q "$root$m" 2>/dev/null; then umount -R -l "$root$m"; fi
    done
}

case "${1:-}" in
    path) shift; root_path "$@" ;;
    build) shift; cmd_build "$@" ;;
    mount) cmd_mount "$2" ;;
    umount) cmd_umount "$2" ;;
    *) echo "usage: $0 path|build NAME SUITE PKG... | mount|umount ROOT" >&2; exit 2 ;;
esac
