#!/usr/bin/env bash
# Real single-node Slurm clusters on loopback, one per Slurm generation, each in its own
# Debian root (scripts/debian-root.sh), so nothing depends on what the host has installed.
#
#   scripts/slurm-testbed.sh build  [GEN...]   build (or find cached) the roots; no daemons
#   scripts/slurm-testbed.sh up     [GEN...]   build, configure, start, wait until ready
#   scripts/slurm-testbed.sh env               print `export` lines for the tests
#   scripts/slurm-testbed.sh status [GEN...]   show what is running
#   scripts/slurm-testbed.sh down   [GEN...]   stop every daemon `up` started (by pidfile)
#
# GEN is a Slurm generation: 22.05 (Debian bookworm), 24.11 (trixie), 26.05 (sid); the
# default is all three. Each generation has its own root, ports and state directory
# ($DROVER_SLURM_DIR/GEN, default /tmp/drover-slurm/GEN) and runs munged, slurmctld, slurmd
# and slurmrestd (JWT auth) inside its root. Daemons run in a mount namespace that has
# pivoted into the root (not a chroot), so Apptainer works in jobs on 26.05. `bin/` in the
# state directory holds wrappers (sbatch, squeue, scancel, scontrol, sinfo) that run the
# generation's own tools from its root on the host, as root or as any other user, with
# `etc/client.conf`. /tmp is the same path inside every root as outside; the checkout is not
# visible to jobs (a job needs its files under /tmp).
#
# Besides the main slurmrestd, each generation has a fault instance: a slurmrestd whose
# slurm.conf names a slurmctld that is never started ("slurmctld down"), a port that is
# closed ("slurmrestd down") and an expired token. 24.11 also runs slurmrestd restricted to
# data_parser/v0.0.40 and to data_parser/v0.0.41, so older codecs keep a live server, and
# with data_parser/v0.0.41,data_parser/v0.0.42 (no v0.0.40, as Slurm 25.05 and later).
# Must run as root. Idempotent: `up` twice is harmless.
set -euo pipefail

cd "$(dirname "$0")/.."
BASE="${DROVER_SLURM_DIR:-/tmp/drover-slurm}"
SUBMIT_USER="${DROVER_SLURM_USER:-drover-ci}"
REST_USER="slurmrest"
ALL_GENERATIONS=(22.05 24.11 26.05)
PACKAGES=(slurm-wlm slurmctld slurmd slurmrestd slurm-client slurm-wlm-jwt-plugin munge curl procps ca-certificates)
TOOLS=(sbatch squeue scancel scontrol sinfo)

log() { echo "slurm-testbed: $*" >&2; }
die() { log "error: $*"; exit 1; }
need_root() { [[ $(id -u) -eq 0 ]] || die "run as root"; }
alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Per generation: Debian suite, extra packages, port base and REST plugin arguments.
suite_of() { case $1 in 22.05) echo bookworm ;; 24.11) echo trixie ;; 26.05) echo sid ;; *) die "unknown generation $1 (known: ${ALL_GENERATIONS[*]})" ;; esac; }
extra_packages() { [[ $1 == 26.05 ]] && echo apptainer || true; }
port_base() { case $1 in 22.05) echo 6900 ;; 24.11) echo 6920 ;; 26.05) echo 6940 ;; esac; }
# The REST API version a generation's newest plugin serves (for readiness pings).
newest_api() { case $1 in 22.05) echo v0.0.38 ;; 24.11) echo v0.0.42 ;; 26.05) echo v0.0.45 ;; esac; }
rest_plugins() {
    case $1 in
        22.05) echo "-s openapi/v0.0.38" ;;  # the dbv* plugins need slurmdbd, which we do not run
        *) echo "-s openapi/slurmctld" ;;    # openapi/slurmdbd aborts without slurmdbd
    esac
}

root_of() {
    local gen=$1
    # shellcheck disable=SC2046
    scripts/debian-root.sh "${2:-path}" "slurm-$(suite_of "$gen")" "$(suite_of "$gen")" "${PACKAGES[@]}" $(extra_packages "$gen")
}

# Runs CMD... inside ROOT, in a private mount namespace pivoted into it (daemons and jobs).
in_pivot() {
    local root=$1
    shift
    unshare -m --propagation private -- /bin/sh -c '
        root=$1; shift
        mount --rbind "$root" "$root" && cd "$root" && mkdir -p .oldroot && pivot_root . .oldroot &&
            umount -l /.oldroot && cd / &&
            exec /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"' sh "$root" "$@"
}

# Runs CMD... inside ROOT with chroot (short admin commands).
in_root() {
    local root=$1
    shift
    chroot "$root" /usr/bin/env PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"
}

host_user() {
    id -u "$SUBMIT_USER" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$SUBMIT_USER"
}

# The same submit user (same uid/gid) inside the root, and slurmrestd's own user.
root_users() {
    local root=$1 uid gid
    uid=$(id -u "$SUBMIT_USER")
    gid=$(id -g "$SUBMIT_USER")
    in_root "$root" getent group "$gid" >/dev/null || in_root "$root" groupadd -g "$gid" "$SUBMIT_USER"
    if ! in_root "$root" id -u "$SUBMIT_USER" >/dev/null 2>&1; then
        in_root "$root" useradd -u "$uid" -g "$gid" --create-home --shell /bin/bash "$SUBMIT_USER"
    elif [[ $(in_root "$root" id -u "$SUBMIT_USER") != "$uid" ]]; then
        # A cached root from before the host user was made again: follow the host's uid.
        in_root "$root" usermod -u "$uid" -g "$gid" "$SUBMIT_USER"
    fi
    in_root "$root" id -u "$REST_USER" >/dev/null 2>&1 ||
        in_root "$root" useradd --system --no-create-home --shell /usr/sbin/nologin "$REST_USER"
}

make_dirs() {
    local root=$1 dir=$2
    mkdir -p "$dir"/{etc,log,run,ctld,spool,munge,munge-run,dev,bin,fault/ctld,fault/etc}
    mkdir -p "$BASE/work"
    chmod 755 "$BASE" "$dir" "$dir"/{etc,log,run,dev,munge-run,bin,fault,fault/etc}
    chown "$SUBMIT_USER:" "$BASE/work"
    in_root "$root" chown slurm: "$dir/ctld" "$dir/log" "$dir/run" "$dir/fault/ctld"
    in_root "$root" chown munge: "$dir/munge" "$dir/munge-run"
    chmod 700 "$dir/munge"
    # Fake GPUs: slurmd wants character devices; clones of /dev/null will do (no cgroups).
    for i in 0 1 2 3; do
        [[ -c $dir/dev/nvidia$i ]] || { rm -f "$dir/dev/nvidia$i"; mknod -m 666 "$dir/dev/nvidia$i" c 1 3; }
    done
}

make_keys() {
    local root=$1 dir=$2
    [[ -s $dir/munge/munge.key ]] || dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
    in_root "$root" chown munge: "$dir/munge/munge.key"
    chmod 400 "$dir/munge/munge.key"
    [[ -s $dir/etc/jwt_hs256.key ]] || dd if=/dev/urandom of="$dir/etc/jwt_hs256.key" bs=32 count=1 status=none
    in_root "$root" chown slurm: "$dir/etc/jwt_hs256.key"
    chmod 600 "$dir/etc/jwt_hs256.key"
}

# slurm.conf for one node on loopback; $3 is the state dir of this slurmctld.
render_conf() {
    local gen=$1 dir=$2 ctld_dir=$3 ctld_port=$4 slurmd_port=$5
    cat <<EOF
# Generated by scripts/slurm-testbed.sh for Slurm $gen; edits are overwritten.
ClusterName=drover$(echo "$gen" | tr -d .)
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge-run/munge.socket.2
AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key=$dir/etc/jwt_hs256.key
StateSaveLocation=$ctld_dir
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$ctld_dir/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$ctld_dir/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
GresTypes=gpu
MailProg=/bin/true
MinJobAge=300
NodeName=localhost NodeAddr=127.0.0.1 CPUs=32 Boards=1 SocketsPerBoard=1 CoresPerSocket=32 ThreadsPerCore=1 RealMemory=32000 Gres=gpu:a100:4 State=UNKNOWN
PartitionName=cpu Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=localhost Default=NO MaxTime=INFINITE State=UP
PartitionName=maint Nodes=localhost Default=NO MaxTime=INFINITE State=UP
EOF
}

# Writes $2 into file $1 when it differs; returns 0 when it changed.
write_if_changed() {
    if [[ -f $1 ]] && [[ $(cat "$1") == "$2" ]]; then return 1; fi
    printf '%s\n' "$2" >"$1"
    chmod 644 "$1"
}

write_config() {
    local gen=$1 dir=$2 base changed=1
    base=$(port_base "$gen")
    write_if_changed "$dir/etc/slurm.conf" "$(render_conf "$gen" "$dir" "$dir/ctld" "$base" $((base + 1)))" && changed=0
    write_if_changed "$dir/etc/gres.conf" "$(printf 'AutoDetect=off\nNodeName=localhost Name=gpu Type=a100 File=%s\n' "$dir/dev/nvidia[0-3]")" && changed=0
    # 24.11 and later refuse to start slurmd without a cgroup filesystem unless told not to use one.
    [[ $gen == 22.05 ]] || { write_if_changed "$dir/etc/cgroup.conf" "CgroupPlugin=disabled" && changed=0; }
    # The fault instance: its slurmctld (port base+5) is never started.
    render_conf "$gen" "$dir" "$dir/fault/ctld" $((base + 5)) $((base + 1)) >"$dir/fault/etc/slurm.conf"
    cp "$dir/etc/gres.conf" "$dir/fault/etc/gres.conf"
    [[ $gen == 22.05 ]] || cp "$dir/etc/cgroup.conf" "$dir/fault/etc/cgroup.conf"
    if ((changed == 0)) && alive "$dir/ctld/slurmctld.pid"; then
        log "$gen: configuration changed; restarting Slurm daemons"
        stop_slurm "$dir"
    fi
}

# The tools run on the host, not inside the root: the root's own dynamic loader starts them
# with the root's libraries, and client.conf points PluginDir into the root. No chroot, no
# namespace and no privilege is needed, so the same wrapper serves root and any other user
# (a sandbox may refuse user namespaces to unprivileged users).
write_wrappers() {
    local root=$1 dir=$2 tool loader libc multiarch libs
    loader=$(in_root "$root" ldd /usr/bin/sbatch | awk '$1 ~ /^\/.*ld-linux/ {print $1}')
    libc=$(in_root "$root" ldd /usr/bin/sbatch | awk '$1 == "libc.so.6" {print $3}')
    [[ -n $loader && -n $libc ]] || die "cannot find the dynamic loader and libc of $root"
    multiarch=$(basename "$(dirname "$libc")")
    libs="$root/lib/$multiarch:$root/usr/lib/$multiarch:$root/usr/lib/$multiarch/slurm-wlm"
    for tool in "${TOOLS[@]}"; do
        cat >"$dir/bin/$tool" <<EOF
#!/bin/sh
# Runs this generation's $tool from its root with the root's loader and libraries (written by
# scripts/slurm-testbed.sh). Give it SLURM_CONF=$dir/etc/client.conf.
exec "$root$loader" --library-path "$libs" --argv0 $tool "$root/usr/bin/$tool" "\$@"
EOF
        chmod 755 "$dir/bin/$tool"
    done
}

# client.conf: slurm.conf as a submit host outside the root reads it. PluginDir points into the
# root. SlurmUser must name, on the host, the uid the root's slurmctld runs as (munge credentials
# are restricted to it): the host's user of that uid, or `drover-slurm`, created with it.
write_client_conf() {
    local root=$1 dir=$2 plugins uid name
    plugins=$(dirname "$(in_root "$root" sh -c 'ls /usr/lib/*/slurm-wlm/auth_munge.so')")
    uid=$(in_root "$root" id -u slurm)
    name=$(getent passwd "$uid" | cut -d: -f1) || true
    if [[ -z $name ]]; then
        name=drover-slurm
        useradd --system --no-create-home --shell /usr/sbin/nologin -u "$uid" "$name"
    fi
    write_if_changed "$dir/etc/client.conf" \
        "$(sed "s/^SlurmUser=.*/SlurmUser=$name/" "$dir/etc/slurm.conf"; echo "PluginDir=$root$plugins")" || true
}

start_munge() {
    local root=$1 dir=$2
    alive "$dir/munge/munged.pid" && return 0
    log "$(basename "$dir"): starting munged"
    in_pivot "$root" runuser -u munge -- /usr/sbin/munged \
        --key-file="$dir/munge/munge.key" --socket="$dir/munge-run/munge.socket.2" \
        --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
        --seed-file="$dir/munge/munged.seed" --force
    wait_for "munged" 20 "$dir" test -S "$dir/munge-run/munge.socket.2"
}

start_slurm() {
    local root=$1 dir=$2
    if ! alive "$dir/ctld/slurmctld.pid"; then
        log "$(basename "$dir"): starting slurmctld"
        in_pivot "$root" SLURM_CONF="$dir/etc/slurm.conf" /usr/sbin/slurmctld -f "$dir/etc/slurm.conf"
    fi
    wait_for "slurmctld" 60 "$dir" env SLURM_CONF="$dir/etc/client.conf" "$dir/bin/scontrol" ping
    if ! alive "$dir/run/slurmd.pid"; then
        log "$(basename "$dir"): starting slurmd"
        in_pivot "$root" SLURM_CONF="$dir/etc/slurm.conf" /usr/sbin/slurmd -f "$dir/etc/slurm.conf" -N localhost
    fi
    wait_for "node idle" 90 "$dir" node_idle "$dir"
}

node_idle() { SLURM_CONF="$1/etc/client.conf" "$1/bin/sinfo" -h -n localhost -o '%t' 2>/dev/null | grep -Eq '^(idle|mix|alloc)'; }

# start_rest ROOT DIR NAME CONF ADDR ARGS...: one slurmrestd, tracked by run/NAME.pid.
start_rest() {
    local root=$1 dir=$2 name=$3 conf=$4 addr=$5
    shift 5
    alive "$dir/run/$name.pid" && return 0
    log "$(basename "$dir"): starting $name on $addr ($*)"
    : >"$dir/log/$name.log"
    chown "$(in_root "$root" id -u "$REST_USER")" "$dir/log/$name.log"
    setsid bash -c "$(declare -f in_pivot); in_pivot \"\$@\"" sh "$root" \
        runuser -u "$REST_USER" -- env SLURM_JWT=daemon SLURM_CONF="$conf" \
        /usr/sbin/slurmrestd -a rest_auth/jwt "$@" "$addr" \
        >>"$dir/log/$name.log" 2>&1 </dev/null &
    echo $! >"$dir/run/$name.pid"
    wait_for "$name" 30 "$dir" listening "$addr"
}

# True when something accepts TCP connections at HOST:PORT (no curl needed on the host).
listening() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }

# Builds the roots of the given generations in parallel; fails when any build fails.
build_roots() {
    local pids=() g pid failed=0
    for g in "$@"; do root_of "$g" build >/dev/null & pids+=($!); done
    for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
    ((failed == 0)) || die "building a Slurm root failed"
}

mint_token() {
    local dir=$1 lifespan=$2 token
    token=$(SLURM_CONF="$dir/etc/client.conf" "$dir/bin/scontrol" token username="$SUBMIT_USER" lifespan="$lifespan" | sed -n 's/^SLURM_JWT=//p')
    [[ -n $token ]] || die "scontrol token returned nothing"
    echo "$token"
}

# wait_for NAME SECONDS DIR CMD...: retries CMD once a second.
wait_for() {
    local name=$1 secs=$2 dir=$3
    shift 3
    for ((i = 0; i < secs; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 1
    done
    log "timed out waiting for $name; logs are in $dir/log"
    tail -n 20 "$dir"/log/*.log "$dir"/ctld/*.log >&2 || true
    exit 1
}

stop_pidfile() {
    local name=$1 pidfile=$2 pid
    alive "$pidfile" || { rm -f "$pidfile"; return 0; }
    log "stopping $name"
    pid=$(cat "$pidfile")
    # slurmrestd runs under runuser: stop the whole process group.
    kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 30; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
    rm -f "$pidfile"
}

stop_slurm() {
    stop_pidfile slurmd "$1/run/slurmd.pid"
    stop_pidfile slurmctld "$1/ctld/slurmctld.pid"
}

# Apptainer test images (26.05, tests/it/slurm_containers.rs), built without any registry: a
# directory sandbox holding only the root's dash with its libraries, /etc/hosts and a marker
# file /drover-sandbox, and the same tree as an OCI archive (which Apptainer converts to SIF
# in its image cache). Kept in DIR/apptainer; rebuilt only when missing or the root changed.
apptainer_images() {
    local root=$1 dir=$2 out=$2/apptainer tmp sandbox f arch layer config manifest
    [[ -s $out/image.oci.tar && $(cat "$out/.root" 2>/dev/null) == "$root" ]] && return 0
    log "$(basename "$dir"): building the Apptainer test sandbox and OCI archive"
    tmp=$(mktemp -d "$dir/apptainer.XXXXXX")
    sandbox=$tmp/sandbox
    mkdir -p "$sandbox"/{bin,etc,proc,sys,dev,tmp,var/tmp,home,root} "$tmp/oci/blobs/sha256"
    for f in /usr/bin/dash $(in_root "$root" ldd /usr/bin/dash | grep -o '/[^ ]*'); do
        mkdir -p "$sandbox$(dirname "$f")"
        cp -L "$root$f" "$sandbox$f"
    done
    ln -s /usr/bin/dash "$sandbox/bin/sh"
    printf '127.0.0.1 localhost\n::1 localhost\n' >"$sandbox/etc/hosts"
    printf 'root:x:0:0:root:/root:/bin/sh\n' >"$sandbox/etc/passwd"
    printf 'root:x:0:\n' >"$sandbox/etc/group"
    echo "drover apptainer test sandbox" >"$sandbox/drover-sandbox"
    # OCI image layout: one uncompressed layer, its config, a manifest and the index.
    blob() { local d; d=$(sha256sum "$1" | cut -c1-64); mv "$1" "$tmp/oci/blobs/sha256/$d"; echo "$d"; }
    size() { stat -c %s "$tmp/oci/blobs/sha256/$1"; }
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$sandbox" -cf "$tmp/layer" .
    layer=$(blob "$tmp/layer")
    arch=$(in_root "$root" dpkg --print-architecture)
    printf '{"architecture":"%s","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
        "$arch" "$layer" >"$tmp/config"
    config=$(blob "$tmp/config")
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
        "$config" "$(size "$config")" "$layer" "$(size "$layer")" >"$tmp/manifest"
    manifest=$(blob "$tmp/manifest")
    printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s}]}' \
        "$manifest" "$(size "$manifest")" >"$tmp/oci/index.json"
    printf '{"imageLayoutVersion":"1.0.0"}' >"$tmp/oci/oci-layout"
    # Apptainer refuses archive members named `./…`: list the top-level names.
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$tmp/oci" -cf "$tmp/image.oci.tar" oci-layout index.json blobs
    rm -rf "$tmp/oci"
    echo "$root" >"$tmp/.root"
    chmod -R a+rX "$tmp"
    rm -rf "$out"
    mv "$tmp" "$out"
}

# Generation settings for the tests, one `KEY=value` a line (read by `env` and by tests).
write_env() {
    local gen=$1 root=$2 dir=$3 base
    base=$(port_base "$gen")
    {
        echo "GENERATION=$gen"
        echo "ROOT=$root"
        echo "VERSION=$(in_root "$root" dpkg-query -W -f='${Version}' slurmctld)"
        echo "REST_URL=http://127.0.0.1:$((base + 2))"
        echo "USER=$SUBMIT_USER"
        echo "TOKEN=$(cat "$dir/token")"
        echo "EXPIRED_TOKEN=$(cat "$dir/expired-token")"
        echo "CONF=$dir/etc/client.conf"
        echo "BIN=$dir/bin"
        echo "WORKDIR=$BASE/work"
        echo "FAULT_CTLD_DOWN_URL=http://127.0.0.1:$((base + 6))"
        echo "FAULT_REST_DOWN_URL=http://127.0.0.1:$((base + 7))"
        if [[ $gen == 24.11 ]]; then
            echo "REST_URL_V0040=http://127.0.0.1:$((base + 3))"
            echo "REST_URL_V0041=http://127.0.0.1:$((base + 4))"
            echo "REST_URL_NO_V0040=http://127.0.0.1:$((base + 8))"
        fi
        if [[ $gen == 26.05 ]]; then
            echo "APPTAINER_SANDBOX=$dir/apptainer/sandbox"
            echo "APPTAINER_OCI_ARCHIVE=$dir/apptainer/image.oci.tar"
        fi
    } >"$dir/env"
}

up_one() {
    local gen=$1 root dir base version
    dir="$BASE/$gen"
    root=$(root_of "$gen" build)
    base=$(port_base "$gen")
    version=$(in_root "$root" dpkg-query -W -f='${Version}' slurmctld)
    [[ $version == "$gen".* ]] || die "the $gen root holds Slurm $version, not $gen (sid moved on?): update ALL_GENERATIONS"
    scripts/debian-root.sh mount "$root"
    root_users "$root"
    make_dirs "$root" "$dir"
    make_keys "$root" "$dir"
    write_wrappers "$root" "$dir"
    start_munge "$root" "$dir"
    write_config "$gen" "$dir"
    write_client_conf "$root" "$dir"
    start_slurm "$root" "$dir"
    # shellcheck disable=SC2046
    start_rest "$root" "$dir" slurmrestd "$dir/etc/slurm.conf" "127.0.0.1:$((base + 2))" $(rest_plugins "$gen")
    # shellcheck disable=SC2046
    start_rest "$root" "$dir" slurmrestd-ctld-down "$dir/fault/etc/slurm.conf" "127.0.0.1:$((base + 6))" $(rest_plugins "$gen")
    if [[ $gen == 24.11 ]]; then
        start_rest "$root" "$dir" slurmrestd-v0040 "$dir/etc/slurm.conf" "127.0.0.1:$((base + 3))" \
            -s openapi/slurmctld -d data_parser/v0.0.40
        start_rest "$root" "$dir" slurmrestd-v0041 "$dir/etc/slurm.conf" "127.0.0.1:$((base + 4))" \
            -s openapi/slurmctld -d data_parser/v0.0.41
        # What Slurm 25.05 and later look like to a client: v0.0.40 is gone.
        start_rest "$root" "$dir" slurmrestd-no-v0040 "$dir/etc/slurm.conf" "127.0.0.1:$((base + 8))" \
            -s openapi/slurmctld -d data_parser/v0.0.41,data_parser/v0.0.42
    fi
    if [[ $gen == 26.05 ]]; then apptainer_images "$root" "$dir"; fi
    (umask 077 && mint_token "$dir" 604800 >"$dir/token")
    (umask 077 && mint_token "$dir" 1 >"$dir/expired-token")
    write_env "$gen" "$root" "$dir"
    log "$gen ready (Slurm $version): $(SLURM_CONF="$dir/etc/client.conf" "$dir/bin/sinfo" -h -o '%P %a %t %G' | tr '\n' ';')"
}

down_one() {
    local dir="$BASE/$1" name
    for name in slurmrestd slurmrestd-ctld-down slurmrestd-v0040 slurmrestd-v0041 slurmrestd-no-v0040; do
        stop_pidfile "$1 $name" "$dir/run/$name.pid"
    done
    stop_slurm "$dir"
    stop_pidfile "$1 munged" "$dir/munge/munged.pid"
}

status_one() {
    local dir="$BASE/$1" f
    echo "Slurm $1 ($dir):"
    for f in "$dir/munge/munged.pid" "$dir/ctld/slurmctld.pid" "$dir"/run/*.pid; do
        [[ -e $f ]] || continue
        if alive "$f"; then echo "  $(basename "$f" .pid): running (pid $(cat "$f"))"; else echo "  $(basename "$f" .pid): stopped"; fi
    done
}

# The tests read DROVER_SLURM_BEDS/GEN/env; the first generation's settings are also exported
# as DROVER_SLURM_* for tests that need one Slurm of any generation.
cmd_env() {
    local default=${DROVER_SLURM_DEFAULT:-24.11} gens=() g
    for g in "${ALL_GENERATIONS[@]}"; do [[ -s $BASE/$g/env ]] && gens+=("$g"); done
    ((${#gens[@]})) || die "no test bed is up; run scripts/slurm-testbed.sh up"
    [[ -s $BASE/$default/env ]] || default=${gens[0]}
    echo "export DROVER_SLURM_BEDS=$BASE"
    # Jobs see the host's /tmp and nothing else of it: test tempdirs must be there.
    echo "export TMPDIR=/tmp"
    echo "export DROVER_SLURM_GENERATIONS='${gens[*]}'"
    # shellcheck disable=SC1090
    (
        . "$BASE/$default/env"
        echo "export DROVER_SLURM_REST_URL=$REST_URL"
        echo "export DROVER_SLURM_USER=$USER"
        echo "export DROVER_SLURM_TOKEN=$TOKEN"
        echo "export DROVER_SLURM_CONF=$CONF"
        echo "export DROVER_SLURM_BIN=$BIN"
        echo "export DROVER_SLURM_WORKDIR=$WORKDIR"
    )
}

cmd=${1:-}
shift || true
gens=("$@")
((${#gens[@]})) || gens=("${ALL_GENERATIONS[@]}")
case $cmd in
    build)
        need_root
        build_roots "${gens[@]}"
        ;;
    up)
        need_root
        host_user
        build_roots "${gens[@]}"
        for g in "${gens[@]}"; do up_one "$g"; done
        ;;
    down) need_root; for g in "${gens[@]}"; do down_one "$g"; done ;;
    env) cmd_env ;;
    status) for g in "${gens[@]}"; do status_one "$g"; done ;;
    *) echo "usage: $0 build|up|down|status [GEN...] | env" >&2; exit 2 ;;
esac
