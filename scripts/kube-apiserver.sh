#!/usr/bin/env bash
# A real Kubernetes API server for custom resources, on loopback: Kubernetes'
# k8s.io/apiextensions-apiserver (discovery, served versions, structural schemas, pruning,
# strict field validation, server-side apply) with Debian's etcd, for the tests that route
# CRD groups to it (tests/it/support/real_apiserver.rs). Recipe:
# ../shared/upstream/REAL-APISERVER.md.
#
#   scripts/kube-apiserver.sh build   build (or find cached) the Debian sid root and the binaries
#   scripts/kube-apiserver.sh up      build, then start etcd, the core stand-in and the server;
#                                     wait until /readyz answers
#   scripts/kube-apiserver.sh env     print `export` lines for the tests
#   scripts/kube-apiserver.sh status  show what is running
#   scripts/kube-apiserver.sh down    stop what `up` started (by pidfile)
#
# The root comes from scripts/debian-root.sh (suite sid: golang-go,
# golang-k8s-apiextensions-apiserver-dev, etcd-server). The server (GOPATH build from
# Debian's packaged sources, ~7 minutes on 2 cores) and the stand-in
# (scripts/kube-core-standin.go, seconds) are built inside that root, statically (CGO off),
# and cached next to it: ROOT.server-KEY (KEY hashes the root's resolved package versions)
# and ROOT.standin-KEY (also the stand-in's source). A new root rebuilds both; a changed
# stand-in rebuilds only itself. etcd runs in the root (chroot); the two Go binaries run on the host.
#
# Ports (loopback; 6900-6950 belong to the Slurm test beds): etcd client $PORT_BASE (6970),
# etcd peer +1, the core stand-in +2, the server (HTTPS, self-signed) +3. State (etcd data,
# certificates, logs, pidfiles): $DROVER_KUBE_DIR (default /tmp/drover-kube-apiserver).
# Any bearer token is accepted (the stand-in authenticates everything). Must run as root.
# Idempotent: `up` twice is harmless.
set -euo pipefail

cd "$(dirname "$0")/.."
STATE="${DROVER_KUBE_DIR:-/tmp/drover-kube-apiserver}"
PORT_BASE="${DROVER_KUBE_PORT_BASE:-6970}"
ETCD_PORT=$PORT_BASE
ETCD_PEER_PORT=$((PORT_BASE + 1))
CORE_PORT=$((PORT_BASE + 2))
API_PORT=$((PORT_BASE + 3))
TOKEN="drover-kube-apiserver-test"
PACKAGES=(golang-go golang-k8s-apiextensions-apiserver-dev etcd-server ca-certificates)
STANDIN=scripts/kube-core-standin.go
# What build_in mounted (and cmd_build unmounts): only its own mounts.
MOUNTED=()
# Bump when the way the binaries are built changes.
BUILD_RECIPE=1

log() { echo "kube-apiserver: $*" >&2; }
die() { log "error: $*"; exit 1; }
need_root() { [[ $(id -u) -eq 0 ]] || die "run as root"; }
alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

root_of() { scripts/debian-root.sh "${1:-path}" kube-apiserver sid "${PACKAGES[@]}"; }

# The server's cache directory for ROOT (keyed by the root's resolved package versions).
server_dir_of() {
    local key
    key=$({ echo "$BUILD_RECIPE"; cat "$1/.drover-versions"; } | sha256sum | cut -c1-12)
    echo "$1.server-$key"
}

# The stand-in's cache directory for ROOT (keyed by the root and the stand-in's source).
standin_dir_of() {
    local key
    key=$({ echo "$BUILD_RECIPE"; cat "$1/.drover-versions" "$STANDIN"; } | sha256sum | cut -c1-12)
    echo "$1.standin-$key"
}

# build_in ROOT OUT_DIR NAME GO_BUILD_ARGS...: runs `go build -o NAME ARGS` inside ROOT
# (GOPATH mode, CGO off: the binary runs on the host) and moves the binary into OUT_DIR.
build_in() {
    local root=$1 out=$2 name=$3
    shift 3
    local tmp="$out.building" started=$SECONDS
    rm -rf "$tmp"
    mkdir -p "$tmp" "$root/var/cache/drover-go"
    if ! mountpoint -q "$root/proc"; then mount -t proc proc "$root/proc" && MOUNTED+=("$root/proc"); fi
    if ! mountpoint -q "$root/dev"; then mount --bind /dev "$root/dev" && MOUNTED+=("$root/dev"); fi
    local go_env=(GO111MODULE=off CGO_ENABLED=0 GOCACHE=/var/cache/drover-go/cache
        GOPATH=/var/cache/drover-go/gopath:/usr/share/gocode HOME=/root PATH=/usr/lib/go/bin:/usr/bin:/bin)
    if ! chroot "$root" /usr/bin/env -i "${go_env[@]}" \
        go build -trimpath -ldflags=-s -o "/var/cache/drover-go/$name" "$@" >"$tmp.log" 2>&1; then
        tail -n 30 "$tmp.log" >&2
        die "building $name failed (log: $tmp.log)"
    fi
    mv "$root/var/cache/drover-go/$name" "$tmp/"
    mv "$tmp.log" "$tmp/build.log"
    rm -rf "$out"
    mv "$tmp" "$out"
    log "built $name in $((SECONDS - started)) s"
}

# Prints the directory holding both binaries' paths: the server, then the stand-in.
cmd_build() {
    need_root
    local root server standin
    root=$(root_of build)
    server=$(server_dir_of "$root")
    standin=$(standin_dir_of "$root")
    exec 8>"$root.go.lock"
    flock 8
    if [[ ! -x $server/apiextensions-apiserver ]]; then
        log "building apiextensions-apiserver in $root (about 7 minutes; cached in $server)"
        build_in "$root" "$server" apiextensions-apiserver k8s.io/apiextensions-apiserver
    fi
    if [[ ! -x $standin/core-standin ]]; then
        cp "$STANDIN" "$root/var/cache/drover-go/core-standin.go"
        build_in "$root" "$standin" core-standin /var/cache/drover-go/core-standin.go
    fi
    local m
    for m in "${MOUNTED[@]}"; do umount "$m"; done
    MOUNTED=()
    echo "$server/apiextensions-apiserver"
    echo "$standin/core-standin"
}

ready() {
    curl -skf --max-time 2 -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$API_PORT/readyz" >/dev/null 2>&1
}

# wait_for NAME SECONDS CMD...: retries CMD every half second.
wait_for() {
    local name=$1 secs=$2 i
    shift 2
    for ((i = 0; i < secs * 2; i++)); do
        "$@" && return 0
        sleep 0.5
    done
    log "$name did not come up within ${secs}s; logs in $STATE"
    tail -n 20 "$STATE"/*.log >&2 || true
    return 1
}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

cmd_up() {
    need_root
    local root server standin
    root=$(root_of build)
    { read -r server; read -r standin; } < <(cmd_build)
    [[ -x $server && -x $standin ]] || die "build failed"
    mkdir -p "$STATE/etcd" "$STATE/certs"
    if alive "$STATE/apiserver.pid" && ready; then
        log "already up on https://127.0.0.1:$API_PORT"
        write_env
        return 0
    fi
    if ! alive "$STATE/etcd.pid"; then
        scripts/debian-root.sh mount "$root"
        setsid chroot "$root" /usr/bin/env -i PATH=/usr/bin:/bin ETCD_UNSUPPORTED_ARCH="${ETCD_UNSUPPORTED_ARCH:-}" \
            etcd --name drover-test --data-dir "$STATE/etcd" \
            --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
            --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
            --initial-cluster "drover-test=http://127.0.0.1:$ETCD_PEER_PORT" \
            --quota-backend-bytes 1073741824 --auto-compaction-retention 1h \
            >"$STATE/etcd.log" 2>&1 </dev/null &
        echo $! >"$STATE/etcd.pid"
        wait_for etcd 30 listening "$ETCD_PORT"
    fi
    if ! alive "$STATE/core.pid"; then
        setsid "$standin" -listen "127.0.0.1:$CORE_PORT" >"$STATE/core.log" 2>&1 </dev/null &
        echo $! >"$STATE/core.pid"
        wait_for "core stand-in" 10 listening "$CORE_PORT"
    fi
    cat >"$STATE/core.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: core
  cluster: {server: "http://127.0.0.1:$CORE_PORT"}
users:
- name: core
  user: {token: "$TOKEN"}
contexts:
- name: core
  context: {cluster: core, user: core}
current-context: core
EOF
    if ! alive "$STATE/apiserver.pid"; then
        KUBE_FEATURE_WatchListClient=false setsid "$server" \
            --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
            --secure-port "$API_PORT" --bind-address 127.0.0.1 --cert-dir "$STATE/certs" \
            --kubeconfig "$STATE/core.kubeconfig" \
            --authentication-kubeconfig "$STATE/core.kubeconfig" \
            --authorization-kubeconfig "$STATE/core.kubeconfig" \
            --authentication-skip-lookup \
            --enable-priority-and-fairness=false \
            --disable-admission-plugins NamespaceLifecycle,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ValidatingAdmissionPolicy \
            >"$STATE/apiserver.log" 2>&1 </dev/null &
        echo $! >"$STATE/apiserver.pid"
    fi
    wait_for apiextensions-apiserver 90 ready
    write_env
    log "up on https://127.0.0.1:$API_PORT"
}

write_env() {
    cat >"$STATE/env" <<EOF
export DROVER_KUBE_APISERVER_URL=https://127.0.0.1:$API_PORT
export DROVER_KUBE_APISERVER_TOKEN=$TOKEN
EOF
}

cmd_env() {
    [[ -s $STATE/env ]] || die "the server is not up; run scripts/kube-apiserver.sh up"
    cat "$STATE/env"
}

cmd_status() {
    local p
    for p in etcd core apiserver; do
        if alive "$STATE/$p.pid"; then echo "$p: running (pid $(cat "$STATE/$p.pid"))"; else echo "$p: stopped"; fi
    done
    if ready; then echo "readyz: ok (https://127.0.0.1:$API_PORT)"; else echo "readyz: not ready"; fi
}

cmd_down() {
    local p pid
    for p in apiserver core etcd; do
        if alive "$STATE/$p.pid"; then
            pid=$(cat "$STATE/$p.pid")
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
            kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$STATE/$p.pid"
    done
    rm -f "$STATE/env"
}

case "${1:-}" in
    build) cmd_build ;;
    up) cmd_up ;;
    env) cmd_env ;;
    status) cmd_status ;;
    down) cmd_down ;;
    *) echo "usage: $0 build|up|env|status|down" >&2; exit 2 ;;
esac
