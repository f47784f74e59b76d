#!/usr/bin/env bash
# A throwaway mDNS test lab in Linux network namespaces: multicast only ever crosses veths that live
# entirely inside the lab's namespaces (they are created inside them, never in the host namespace),
# so nothing reaches the machine's real interfaces. Needs root, iproute2, util-linux, dbus-daemon,
# avahi-daemon. Quiet on success; errors go to stderr.
#
#   lab.sh up PREFIX [--members N | --three] [--subnet X]
#       N member namespaces PREFIXa, PREFIXb, ... (N = 2..5, default 2; --three is --members 3),
#       members a..e. Member m has interface PREFIXv<m> with 10.77.X.<1..5>/24 (a=1, b=2, ... e=5),
#       lo up and a 224.0.0.0/4 route on the veth.
#       Two members: one veth pair a<->b. Three or more: a bridge namespace PREFIXbr holding bridge
#       PREFIXbr (multicast snooping off) with ports PREFIXp<m> paired to each member's PREFIXv<m>.
#       X defaults to a hash of PREFIX (1..254), bumped past subnets of other live labs.
#       PREFIX: lowercase letter then up to 12 of [a-z0-9] (interface names stay <= 15 chars).
#   lab.sh split PREFIX GROUP1 GROUP2
#       A network partition: GROUP1 and GROUP2 are disjoint sets of member letters (e.g. `ab cde`);
#       a member of one group can no longer reach a member of the other, in either direction.
#       Done with blackhole host routes inside the member namespaces (plain iproute2): packets to
#       the other group are dropped silently (established TCP connections stall as on a cut cable;
#       new connections fail at once with EINVAL). Members in no group, and members of the same
#       group, still reach everyone they reached before. Replaces an earlier split (heals first).
#   lab.sh heal PREFIX
#       Removes every partition route (`split`); idempotent.
#   lab.sh avahi PREFIX NS
#       A private dbus-daemon (socket LABDIR/NS/bus.sock) and an avahi-daemon in namespace NS
#       (NS = a..e or the full namespace name), allow-interfaces=PREFIXv<NS>, IPv4 only, no
#       reflector, host name PREFIX-NS. avahi-daemon runs in its own mount namespace with LABDIR/NS/run
#       bound over /run (pid file, socket: never meet a host avahi or another lab) and
#       LABDIR/NS/services over /etc/avahi/services (empty: host static services are not published;
#       *.service files dropped there are picked up at once, avahi watches the directory).
#       Waits (KIANA_LAB_TIMEOUT seconds, default 15) until the server state is RUNNING, then prints
#       DBUS_SYSTEM_BUS_ADDRESS=unix:path=... for clients (also in LABDIR/NS/env). Idempotent.
#   lab.sh exec PREFIX NS cmd...
#       Runs cmd in namespace NS (a..e, br or the full name) with DBUS_SYSTEM_BUS_ADDRESS pointing
#       at that member's private bus (set even if no avahi runs there, so avahi clients can never
#       reach a host bus).
#   lab.sh ip PREFIX NS        prints the member's IPv4 address
#   lab.sh ifname PREFIX NS    prints the member's interface name
#   lab.sh down PREFIX
#       Kills every process in the lab's namespaces and the recorded daemons, deletes the namespaces
#       and LABDIR. Idempotent; always exits 0.
#
# LABDIR is ${KIANA_LAB_ROOT:-/tmp}/kiana-lab-PREFIX (daemon logs: LABDIR/NS/{dbus,avahi}.log).
set -euo pipefail

LAB_ROOT=${KIANA_LAB_ROOT:-/tmp}
TIMEOUT=${KIANA_LAB_TIMEOUT:-15}

# Close every inherited descriptor above stderr: a caller that spawns us without close-on-exec
# (Foundation's Process does) would otherwise leak its pipes into the long-lived daemons and wait
# for an EOF that never comes.
for fd in /proc/$$/fd/*; do
    fd=${fd##*/}
    [ "$fd" -gt 2 ] 2>/dev/null && eval "exec $fd>&-" 2>/dev/null || true
done

die() { echo "lab.sh: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

check_prefix() {
    [[ ${1:-} =~ ^[a-z][a-z0-9]{0,12}$ ]] || die "bad PREFIX '${1:-}': want [a-z][a-z0-9]{0,12}"
    P=$1
    LABDIR=$LAB_ROOT/kiana-lab-$P
}

ns_exists() { [ -e "/run/netns/$1" ]; }

# member NS -> M (single letter); accepts "a" or "${P}a".
member() {
    local m=${1:-}
    [ "${m#"$P"}" != "$m" ] && [ ${#m} -eq $((${#P} + 1)) ] && m=${m#"$P"}
    [[ $m =~ ^[a-e]$ ]] || die "bad NS '${1:-}': want a..e or ${P}a..${P}e"
    M=$m
    NS=$P$m
    IFN=${P}v$m
    MDIR=$LABDIR/$m
    BUS=unix:path=$MDIR/bus.sock
}

member_ip() {
    [ -f "$LABDIR/lab.env" ] || die "lab '$P' is not up"
    local SUBNET MEMBERS
    # shellcheck disable=SC1091
    . "$LABDIR/lab.env"
    case " $MEMBERS " in *" $M "*) ;; *) die "lab '$P' has no member '$M'";; esac
    echo "10.77.$SUBNET.$(letter_index "$M")"
}

ALL_MEMBERS="a b c d e"

# a -> 1, b -> 2, ... e -> 5
letter_index() { case $1 in a) echo 1;; b) echo 2;; c) echo 3;; d) echo 4;; e) echo 5;; esac; }

# pid exists and is not a zombie (the init of some containers reaps orphans only every second or so)
alive() {
    local st
    st=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null) || return 1
    [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

# pid alive and its executable's basename is $2 (guards against recycled pids)
pid_is() {
    local pid=$1 want=$2 exe
    [ -n "$pid" ] && [ -e "/proc/$pid" ] || return 1
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
    [ "${exe##*/}" = "$want" ]
}

cmd_up() {
    local count=2 subnet=""
    while [ $# -gt 0 ]; do
        case $1 in
            --three) count=3;;
            --members)
                [ $# -ge 2 ] || die "--members needs a value"
                [[ $2 =~ ^[2-5]$ ]] || die "--members wants 2..5, not '$2'"
                count=$2; shift;;
            --subnet) [ $# -ge 2 ] || die "--subnet needs a value"; subnet=$2; shift;;
            *) die "up: unknown argument '$1'";;
        esac
        shift
    done
    local members; members=$(echo $ALL_MEMBERS | cut -d' ' -f1-"$count")
    local m
    for m in $members br; do ns_exists "$P$m" && die "namespace $P$m already exists (lab.sh down $P first)"; done
    [ -e "$LABDIR" ] && die "$LABDIR already exists (lab.sh down $P first)"

    if [ -z "$subnet" ]; then
        subnet=$(( $(printf %s "$P" | cksum | cut -d' ' -f1) % 254 + 1 ))
        local used="" f tries=0
        for f in "$LAB_ROOT"/kiana-lab-*/lab.env; do
            [ -f "$f" ] && used="$used $(sed -n 's/^SUBNET=//p' "$f")"
        done
        while case " $used " in *" $subnet "*) true;; *) false;; esac; do
            subnet=$(( subnet % 254 + 1 )); tries=$((tries + 1))
            [ $tries -lt 254 ] || die "no free 10.77.X.0/24 subnet"
        done
    fi
    [[ $subnet =~ ^[0-9]+$ ]] && [ "$subnet" -ge 1 ] && [ "$subnet" -le 254 ] || die "bad subnet '$subnet'"

    mkdir -p "$LABDIR"
    chmod 755 "$LABDIR"
    printf 'SUBNET=%s\nMEMBERS="%s"\n' "$subnet" "$members" > "$LABDIR/lab.env"
    trap 'set +e; echo "lab.sh: up $P failed, tearing down" >&2; cmd_down >/dev/null 2>&1; exit 1' ERR

    for m in $members; do
        ip netns add "$P$m"
    done
    if [ "$count" -eq 2 ]; then
        # Created inside a, peer moved straight into b: the pair never exists in the host namespace.
        ip -n "${P}a" link add "${P}va" type veth peer name "${P}vb" netns "${P}b"
    else
        ip netns add "${P}br"
        ip -n "${P}br" link set lo up
        ip -n "${P}br" link add "${P}br" type bridge mcast_snooping 0 stp_state 0
        ip -n "${P}br" link set "${P}br" up
        for m in $members; do
            ip -n "${P}br" link add "${P}p$m" type veth peer name "${P}v$m" netns "$P$m"
            ip -n "${P}br" link set "${P}p$m" master "${P}br"
            ip -n "${P}br" link set "${P}p$m" up
        done
    fi
    local i=1
    for m in $members; do
        ip -n "$P$m" link set lo up
        ip -n "$P$m" addr add "10.77.$subnet.$i/24" dev "${P}v$m"
        ip -n "$P$m" link set "${P}v$m" up
        ip -n "$P$m" route add 224.0.0.0/4 dev "${P}v$m"
        i=$((i + 1))
    done
    # Wait for carrier on every member veth (normally immediate).
    local deadline=$((SECONDS + TIMEOUT))
    for m in $members; do
        until [[ $(ip -n "$P$m" link show "${P}v$m") == *LOWER_UP* ]]; do
            [ $SECONDS -lt $deadline ] || { echo "lab.sh: ${P}v$m has no carrier" >&2; false; }
            sleep 0.05
        done
    done
    trap - ERR
}

write_confs() {
    cat > "$MDIR/dbus.conf" <<EOF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$MDIR/bus.sock</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
EOF
    cat > "$MDIR/avahi-daemon.conf" <<EOF
[server]
host-name=$P-$M
use-ipv4=yes
use-ipv6=no
allow-interfaces=$IFN
enable-dbus=yes
disallow-other-stacks=no
ratelimit-interval-usec=1000000
ratelimit-burst=1000

[wide-area]
enable-wide-area=no

[publish]
publish-addresses=yes
publish-hinfo=no
publish-workstation=no
publish-domain=yes
publish-aaaa-on-ipv4=no
publish-a-on-ipv6=no

[reflector]
enable-reflector=no

[rlimits]
EOF
}

avahi_state() {
    DBUS_SYSTEM_BUS_ADDRESS=$BUS timeout 2 dbus-send --system --print-reply=literal \
        --dest=org.freedesktop.Avahi / org.freedesktop.Avahi.Server.GetState 2>/dev/null \
        | awk '{print $2}'
}

show_log() { echo "--- $1" >&2; tail -n 20 "$1" >&2 2>/dev/null || true; }

cmd_avahi() {
    [ $# -eq 1 ] || usage
    member "$1"
    member_ip >/dev/null
    ns_exists "$NS" || die "namespace $NS does not exist"
    mkdir -p "$MDIR/run" "$MDIR/services"
    [ -d /etc/avahi/services ] || die "/etc/avahi/services missing (is avahi-daemon installed?)"
    chmod 755 "$MDIR"

    if pid_is "$(cat "$MDIR/avahi.pid" 2>/dev/null)" avahi-daemon && [ "$(avahi_state)" = 2 ]; then
        echo "DBUS_SYSTEM_BUS_ADDRESS=$BUS"
        return 0
    fi
    # Half-started earlier? Start from scratch for this member.
    stop_member
    write_confs

    # setsid: own session, survives the caller's Ctrl-C/hangup; all fds redirected so that a caller
    # capturing our stdout does not wait on the daemons. setsid does not fork here (we are not a
    # group leader) and ip netns exec / unshare / sh exec, so $! is the daemon's pid.
    setsid ip netns exec "$NS" dbus-daemon --config-file="$MDIR/dbus.conf" --nofork --nopidfile \
        --nosyslog </dev/null >"$MDIR/dbus.log" 2>&1 &
    echo $! > "$MDIR/dbus.pid"

    local deadline=$((SECONDS + TIMEOUT))
    until DBUS_SYSTEM_BUS_ADDRESS=$BUS timeout 2 dbus-send --system --print-reply \
            --dest=org.freedesktop.DBus / org.freedesktop.DBus.GetId >/dev/null 2>&1; do
        if ! alive "$(cat "$MDIR/dbus.pid")" || [ $SECONDS -ge $deadline ]; then
            show_log "$MDIR/dbus.log"; stop_member; die "dbus-daemon for $NS did not come up"
        fi
        sleep 0.05
    done

    DBUS_SYSTEM_BUS_ADDRESS=$BUS setsid ip netns exec "$NS" unshare --mount --propagation private \
        sh -c 'mount --bind "$1" /run && mount --bind "$2" /etc/avahi/services &&
               exec avahi-daemon -f "$3" --no-chroot --no-rlimits' \
        lab-avahi "$MDIR/run" "$MDIR/services" "$MDIR/avahi-daemon.conf" \
        </dev/null >"$MDIR/avahi.log" 2>&1 &
    echo $! > "$MDIR/avahi.pid"

    # 2 = AVAHI_SERVER_RUNNING (host name probed and announced).
    until [ "$(avahi_state)" = 2 ]; do
        local pid; pid=$(cat "$MDIR/avahi.pid")
        if ! alive "$pid" || [ $SECONDS -ge $deadline ]; then
            show_log "$MDIR/avahi.log"; stop_member; die "avahi-daemon in $NS did not reach RUNNING"
        fi
        sleep 0.1
    done
    echo "DBUS_SYSTEM_BUS_ADDRESS=$BUS" > "$MDIR/env"
    echo "DBUS_SYSTEM_BUS_ADDRESS=$BUS"
}

# Kill a member's daemons (recorded pids, verified by executable name).
stop_member() {
    local f want pid
    for f in avahi:avahi-daemon dbus:dbus-daemon; do
        want=${f#*:}
        pid=$(cat "$MDIR/${f%%:*}.pid" 2>/dev/null || true)
        if pid_is "$pid" "$want"; then
            kill -TERM "$pid" 2>/dev/null || true
            local n=0
            while alive "$pid" && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$MDIR/${f%%:*}.pid"
    done
    rm -f "$MDIR/env" "$MDIR/bus.sock"
}

kill_ns_pids() {
    local ns=$1 pids n=0
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [ -n "$pids" ] || return 0
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null || true
    while [ $n -lt 30 ]; do
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        [ -n "$pids" ] || return 0
        sleep 0.1; n=$((n + 1))
    done
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    n=0
    while [ -n "$(ip netns pids "$ns" 2>/dev/null || true)" ] && [ $n -lt 20 ]; do sleep 0.1; n=$((n + 1)); done
}

cmd_down() {
    local m ns
    # Recorded daemons first (covers a namespace already deleted while they still run).
    for m in $ALL_MEMBERS; do
        if [ -d "$LABDIR/$m" ]; then MDIR=$LABDIR/$m; stop_member; fi
    done
    for m in $ALL_MEMBERS br; do
        ns=$P$m
        ns_exists "$ns" || continue
        kill_ns_pids "$ns"
        ip netns del "$ns" 2>/dev/null || true
    done
    # The /run and services binds lived only in the daemons' private mount namespaces, gone with them.
    rm -rf "$LABDIR" 2>/dev/null || true
    return 0
}

# Members of the lab, from lab.env.
lab_members() {
    [ -f "$LABDIR/lab.env" ] || die "lab '$P' is not up"
    local SUBNET MEMBERS
    # shellcheck disable=SC1091
    . "$LABDIR/lab.env"
    echo "$MEMBERS"
}

# GROUP ("ab", "cde") -> its letters, checked against the lab's members, one per line.
group_members() {
    local g=$1 all=$2 i m
    [[ $g =~ ^[a-e]+$ ]] || die "bad group '$g': want member letters such as ab or cde"
    for ((i = 0; i < ${#g}; i++)); do
        m=${g:i:1}
        case " $all " in *" $m "*) ;; *) die "lab '$P' has no member '$m'";; esac
        echo "$m"
    done
}

cmd_heal() {
    local all m route
    all=$(lab_members)
    for m in $all; do
        ns_exists "$P$m" || continue
        # Only the routes `split` adds: blackhole /32s to other members.
        ip -n "$P$m" -4 route show type blackhole 2>/dev/null | while read -r _ route _; do
            [ -n "$route" ] && ip -n "$P$m" route del blackhole "$route" 2>/dev/null || true
        done
    done
    rm -f "$LABDIR/split"
}

cmd_split() {
    [ $# -eq 2 ] || usage
    local all g1 g2 m n ipm ipn
    all=$(lab_members)
    g1=$(group_members "$1" "$all") || exit 1
    g2=$(group_members "$2" "$all") || exit 1
    for m in $g1; do
        for n in $g2; do [ "$m" != "$n" ] || die "member '$m' is in both groups"; done
    done
    cmd_heal
    for m in $g1; do
        M=$m; ipm=$(member_ip)
        for n in $g2; do
            M=$n; ipn=$(member_ip)
            ip -n "$P$m" route add blackhole "$ipn/32"
            ip -n "$P$n" route add blackhole "$ipm/32"
        done
    done
    echo "$1 $2" > "$LABDIR/split"
}

cmd_exec() {
    [ $# -ge 2 ] || usage
    if [ "$1" = br ] || [ "$1" = "${P}br" ]; then
        NS=${P}br; BUS=unix:path=$LABDIR/br/bus.sock   # never exists: keeps clients off host buses
    else
        member "$1"
    fi
    shift
    ns_exists "$NS" || die "namespace $NS does not exist"
    export DBUS_SYSTEM_BUS_ADDRESS=$BUS
    exec ip netns exec "$NS" "$@"
}

[ $# -ge 2 ] || usage
[ "$(id -u)" -eq 0 ] || die "must run as root"
sub=$1; check_prefix "$2"; shift 2
case $sub in
    up) cmd_up "$@";;
    avahi) cmd_avahi "$@";;
    exec) cmd_exec "$@";;
    ip) [ $# -eq 1 ] || usage; member "$1"; member_ip;;
    ifname) [ $# -eq 1 ] || usage; member "$1"; member_ip >/dev/null; echo "$IFN";;
    split) cmd_split "$@";;
    heal) [ $# -eq 0 ] || usage; cmd_heal;;
    down) set +e; cmd_down; exit 0;;
    *) usage;;
esac
