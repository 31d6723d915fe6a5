#!/usr/bin/env bash
# Load test: trellis vs nginx vs HAProxy, same run, same backend, same pinning.
#
#   deploy/loadtest/run.sh                      # plain scenario, 10s per peer
#   DURATION=30s SCENARIO=mix deploy/loadtest/run.sh
#   SCENARIO=https deploy/loadtest/run.sh        # wrk over TLS to the proxies (plain HTTP to the backend)
#   PEERS="direct trellis" TRELLIS_BIN=/path/to/trellis deploy/loadtest/run.sh
#   PEERS="trellis trellis-log nginx nginx-log" deploy/loadtest/run.sh   # access logs' cost: off vs to a file
#   PEERS="trellis trellis-auth" deploy/loadtest/run.sh   # a 10-statement auth policy's cost
#
# One `trellis echo` backend pinned to core LOAD_CORE (default 1) with wrk; each proxy runs one worker
# pinned to core PROXY_CORE (default 0). For each peer: req/s, p50, p99 (wrk --latency) and the proxy's
# CPU time per request (utime+stime from /proc/PID/stat, before/after the run). See README.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}                # a short unmeasured wrk run before each measured one; 0 to skip
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
SCENARIO=${SCENARIO:-plain}         # plain | mix | https
PEERS=${PEERS:-direct trellis trellis-log nginx haproxy}
PROXY_CORE=${PROXY_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}
TRELLIS_BIN=${TRELLIS_BIN:-}        # default: cargo build --release -p trellis, then target/release/trellis
ECHO_BIN=${ECHO_BIN:-}              # binary providing `echo` (default: the trellis binary)
NO_BUILD=${NO_BUILD:-0}             # 1: don't run cargo, use target/release/trellis as it is
KEEP=${KEEP:-0}                     # 1: keep the work directory (configs, logs, raw wrk output)
ACCESS_LOG=${ACCESS_LOG:-}          # trellis-log's access log file (default: in the work directory)
READY_TIMEOUT=${READY_TIMEOUT:-15}  # seconds a server gets to answer its first request

usage() {
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    cat <<EOF

Environment: DURATION=$DURATION WARMUP=$WARMUP CONNECTIONS=$CONNECTIONS THREADS=$THREADS SCENARIO=$SCENARIO
             PEERS="$PEERS" PROXY_CORE=$PROXY_CORE LOAD_CORE=$LOAD_CORE
             TRELLIS_BIN ECHO_BIN NO_BUILD KEEP READY_TIMEOUT
EOF
}
case "${1:-}" in
    -h | --help) usage; exit 0 ;;
    "") ;;
    *) echo "run.sh: unknown argument '$1' (settings are environment variables; see --help)" >&2; exit 2 ;;
esac

log() { printf '>> %s\n' "$*" >&2; }
die() { printf 'run.sh: %s\n' "$*" >&2; exit 1; }

SCHEME=http
case "$SCENARIO" in
    plain) SUFFIX=""; WRK_SCRIPT=() ;;
    mix) SUFFIX="-mix"; WRK_SCRIPT=(-s "$HERE/mix.lua") ;;
    https) SUFFIX="-https"; WRK_SCRIPT=(); SCHEME=https ;;
    *) die "SCENARIO must be plain, mix or https, not '$SCENARIO'" ;;
esac

# ---------------------------------------------------------------------------------------------- tools
missing=()
tools=(wrk taskset getconf)
[[ "$SCENARIO" == https ]] && tools+=(openssl curl)
for tool in "${tools[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
    echo "run.sh: missing: ${missing[*]}" >&2
    echo "        install with: apt-get install wrk util-linux libc-bin   (and nginx haproxy for the peers)" >&2
    exit 1
fi
want_peer() { [[ " $PEERS " == *" $1 "* ]]; }
for peer in nginx haproxy; do
    if want_peer "$peer" && ! command -v "$peer" >/dev/null 2>&1 && [[ ! -x /usr/sbin/$peer ]]; then
        log "$peer is not installed: skipping it (apt-get install $peer)"
        PEERS=" $PEERS "
        PEERS=${PEERS// $peer / }
    fi
done
NGINX=$(command -v nginx 2>/dev/null || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy 2>/dev/null || echo /usr/sbin/haproxy)

ncpu=$(getconf _NPROCESSORS_ONLN)
if ((ncpu < 2)); then
    log "only $ncpu CPU online: proxy, backend and wrk all share core 0 (numbers are not comparable to a 2-core run)"
    PROXY_CORE=0
    LOAD_CORE=0
fi
CLK_TCK=$(getconf CLK_TCK)

if [[ -z "$TRELLIS_BIN" ]]; then
    TRELLIS_BIN=$ROOT/target/release/trellis
    if [[ "$NO_BUILD" != 1 ]] && command -v cargo >/dev/null 2>&1; then
        log "cargo build --release -p trellis"
        (cd "$ROOT" && cargo build --release -p trellis) >&2 || die "cargo build --release -p trellis failed"
    fi
fi
[[ -x "$TRELLIS_BIN" ]] || die "no trellis binary at $TRELLIS_BIN (cargo build --release -p trellis, or set TRELLIS_BIN)"
ECHO_BIN=${ECHO_BIN:-$TRELLIS_BIN}

# ------------------------------------------------------------------------------- processes and cleanup
WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/trellis-loadtest.XXXXXX")
chmod 755 "$WORKDIR" # nginx workers may run as another user
STARTED=()

stop_all() {
    local pid pids=() deadline
    for pid in "${STARTED[@]}"; do
        pids+=("$pid")
        # nginx workers and anything else a server forked
        while read -r child; do [[ -n "$child" ]] && pids+=("$child"); done < <(pgrep -P "$pid" 2>/dev/null || true)
    done
    ((${#pids[@]})) || return 0
    kill -TERM "${pids[@]}" 2>/dev/null || true
    deadline=$((SECONDS + 5))
    for pid in "${pids[@]}"; do
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.05; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    STARTED=()
}
on_exit() {
    local rc=$?
    stop_all
    if [[ "$KEEP" == 1 ]]; then
        log "configs, logs and raw wrk output kept in $WORKDIR"
    else
        rm -rf "$WORKDIR"
    fi
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A port in 20000-32767 (below the usual ephemeral range) that nothing listens on and we haven't handed out.
USED_PORTS=" "
free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + (RANDOM * 32768 + RANDOM) % 12768))
        [[ "$USED_PORTS" == *" $p "* ]] && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            USED_PORTS+="$p "
            echo "$p"
            return 0
        fi
    done
    die "no free port found"
}

# http_get PORT HOST PATH: one HTTP/1.1 request over bash's /dev/tcp; prints the raw response.
http_get() {
    local port=$1 host=$2 path=$3 fd
    exec {fd}<>"/dev/tcp/127.0.0.1/$port" || return 1
    printf 'GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$path" "$host" >&"$fd"
    timeout 2 cat <&"$fd" || true
    exec {fd}>&-
}

# https_get PORT HOST PATH: the same over TLS (certificate not verified: it is the run's own), with curl.
https_get() {
    curl -sk -i --http1.1 --max-time 2 -H "Host: $2" "https://127.0.0.1:$1$3"
}

# wait_ready NAME PORT PID [SCHEME]: bounded wait until PORT answers `GET /` with 200 and the echo backend's body.
wait_ready() {
    local name=$1 port=$2 pid=$3 scheme=${4:-http} deadline resp=""
    deadline=$((SECONDS + READY_TIMEOUT))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "$name exited before it was ready; its log:"
            tail -n 20 "$WORKDIR/$name.log" >&2 || true
            return 1
        fi
        if resp=$(${scheme}_get "$port" loadtest / 2>/dev/null) && [[ "$resp" == "HTTP/1.1 200"* && "$resp" == *"hello from"* ]]; then
            return 0
        fi
        sleep 0.1
    done
    log "$name did not answer GET / with 200 within ${READY_TIMEOUT}s; last response:"
    printf '%s\n' "${resp:-<none>}" | head -n 12 >&2
    log "its log:"
    tail -n 20 "$WORKDIR/$name.log" >&2 || true
    return 1
}

# start NAME CORE CMD...: starts CMD pinned to CORE in the background, output to $WORKDIR/NAME.log; sets PID.
start() {
    local name=$1 core=$2
    shift 2
    taskset -c "$core" "$@" >"$WORKDIR/$name.log" 2>&1 &
    PID=$!
    STARTED+=("$PID")
}

# ticks PID...: utime+stime (clock ticks) summed over the given processes (all their threads).
ticks() {
    local pid total=0 stat rest f
    for pid in "$@"; do
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        rest=${stat##*) } # fields from 3 on; comm (field 2) may contain spaces
        read -r -a f <<<"$rest"
        total=$((total + f[11] + f[12])) # fields 14 (utime) and 15 (stime)
    done
    echo "$total"
}

# proc_tree PID: PID and its direct children (nginx master + worker).
proc_tree() {
    echo "$1"
    pgrep -P "$1" 2>/dev/null || true
}

render() { # render TEMPLATE OUT: fills @PLACEHOLDERS@
    sed -e "s|@WORKDIR@|$WORKDIR|g" -e "s|@PROXY_PORT@|$PROXY_PORT|g" \
        -e "s|@BACKEND_PORT@|$BACKEND_PORT|g" -e "s|@ADMIN_PORT@|$ADMIN_PORT|g" "$1" >"$2"
}

# to_us VALUE: wrk's "812.00us" / "1.23ms" / "2.00s" / "1.00m" -> microseconds
to_us() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        m = (u == "us") ? 1 : (u == "ms") ? 1e3 : (u == "s") ? 1e6 : (u == "m") ? 6e7 : (u == "h") ? 3.6e9 : -1
        if (m < 0) print ""; else printf "%.0f", n * m
    }'
}

# ------------------------------------------------------------------------------------------ measuring
declare -A R_RPS R_P50 R_P99 R_CPU R_ECHO R_BAD R_ERR R_NOTE
ORDER=()

run_wrk() { # run_wrk PORT DURATION [--latency]: wrk pinned with the backend
    local port=$1 dur=$2 scheme=$SCHEME
    shift 2
    [[ "$port" == "$BACKEND_PORT" ]] && scheme=http # direct: the backend speaks plain HTTP
    taskset -c "$LOAD_CORE" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$dur" "$@" "${WRK_SCRIPT[@]}" \
        "$scheme://127.0.0.1:$port/"
}

# measure NAME PORT PROXY_PIDS...: warm-up, then the measured run; fills the R_* tables.
measure() {
    local name=$1 port=$2
    shift 2
    local pids=("$@") out="$WORKDIR/$name.wrk" c0 c1 e0 e1 reqs
    if [[ "$WARMUP" != 0 && "$WARMUP" != 0s ]]; then
        run_wrk "$port" "$WARMUP" >/dev/null 2>&1 || true
    fi
    log "$name: wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency ${WRK_SCRIPT[*]} $SCHEME://127.0.0.1:$port/"
    c0=$(ticks "${pids[@]}")
    e0=$(ticks "$BACKEND_PID")
    if ! run_wrk "$port" "$DURATION" --latency >"$out" 2>&1; then
        R_NOTE[$name]="wrk failed: $(tail -n 1 "$out")"
        return 1
    fi
    c1=$(ticks "${pids[@]}")
    e1=$(ticks "$BACKEND_PID")
    reqs=$(awk '/ requests in / {print $1; exit}' "$out")
    R_RPS[$name]=$(awk '/^Requests\/sec:/ {print $2; exit}' "$out")
    R_P50[$name]=$(to_us "$(awk '$1 == "50%" {print $2; exit}' "$out")")
    R_P99[$name]=$(to_us "$(awk '$1 == "99%" {print $2; exit}' "$out")")
    R_BAD[$name]=$(awk -F': *' '/Non-2xx or 3xx responses/ {print $2; exit}' "$out")
    R_BAD[$name]=${R_BAD[$name]:-0}
    R_ERR[$name]=$(awk '/Socket errors:/ {gsub(",", ""); print $4 + $6 + $8 + $10; exit}' "$out")
    R_ERR[$name]=${R_ERR[$name]:-0}
    if ((${#pids[@]} && ${reqs:-0} > 0)); then
        R_CPU[$name]=$(awk -v d=$((c1 - c0)) -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN { printf "%.2f", d / hz * 1e6 / n }')
    fi
    if ((${reqs:-0} > 0)); then
        R_ECHO[$name]=$(awk -v d=$((e1 - e0)) -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN { printf "%.2f", d / hz * 1e6 / n }')
    fi
    if [[ "${R_BAD[$name]}" != 0 || "${R_ERR[$name]}" != 0 ]]; then
        R_NOTE[$name]="${R_BAD[$name]} non-2xx/3xx, ${R_ERR[$name]} socket errors"
    fi
}

# peer NAME: start the proxy, wait for it, measure, stop it. A failure is recorded, not fatal.
peer() {
    local name=$1 pids=()
    ORDER+=("$name")
    if [[ "$name" == direct ]]; then
        measure direct "$BACKEND_PORT" || true
        return 0
    fi
    PROXY_PORT=$(free_port)
    ADMIN_PORT=$(free_port)
    case "$name" in
        trellis)
            render "$HERE/trellis$SUFFIX.toml.tmpl" "$WORKDIR/trellis.toml"
            start trellis "$PROXY_CORE" "$TRELLIS_BIN" run -c "$WORKDIR/trellis.toml" --workers 1
            ;;
        trellis-log)
            # The same, with every request written to an access log file (metrics are always on).
            render "$HERE/trellis$SUFFIX.toml.tmpl" "$WORKDIR/trellis-log.toml"
            sed -i "s|^destination = \"off\"|destination = \"${ACCESS_LOG:-$WORKDIR/access.log}\"|" "$WORKDIR/trellis-log.toml"
            grep -q '^destination = "/' "$WORKDIR/trellis-log.toml" || die "trellis-log: no access_log destination to replace in the template"
            start trellis-log "$PROXY_CORE" "$TRELLIS_BIN" run -c "$WORKDIR/trellis-log.toml" --workers 1
            ;;
        trellis-auth)
            # The same, with the 10-statement network policy of auth-policy.toml on every request.
            render "$HERE/trellis$SUFFIX.toml.tmpl" "$WORKDIR/trellis-auth.toml"
            cat "$HERE/auth-policy.toml" >>"$WORKDIR/trellis-auth.toml"
            start trellis-auth "$PROXY_CORE" "$TRELLIS_BIN" run -c "$WORKDIR/trellis-auth.toml" --workers 1
            ;;
        nginx | nginx-log)
            render "$HERE/nginx$SUFFIX.conf.tmpl" "$WORKDIR/nginx.conf"
            if [[ "$name" == nginx-log ]]; then
                # The reference for trellis-log: nginx's combined format, buffered as nginx users do.
                sed -i "s|access_log off;|access_log $WORKDIR/nginx-access.log combined buffer=64k flush=1s;|" "$WORKDIR/nginx.conf"
            fi
            mkdir -p "$WORKDIR/nginx-tmp"
            local eflag=()
            "$NGINX" -h 2>&1 | grep -q -- ' -e ' && eflag=(-e "$WORKDIR/nginx-error.log")
            start "$name" "$PROXY_CORE" "$NGINX" -p "$WORKDIR" -c "$WORKDIR/nginx.conf" "${eflag[@]}"
            ;;
        haproxy)
            render "$HERE/haproxy$SUFFIX.cfg.tmpl" "$WORKDIR/haproxy.cfg"
            start haproxy "$PROXY_CORE" "$HAPROXY" -db -f "$WORKDIR/haproxy.cfg"
            ;;
    esac
    local pid=$PID
    if ! wait_ready "$name" "$PROXY_PORT" "$pid" "$SCHEME"; then
        R_NOTE[$name]="did not start or did not forward (see above)"
        stop_all_but_backend
        return 0
    fi
    if [[ "$SCENARIO" == mix ]]; then
        # The routing config is the mix one: a fixed response only a rule can produce.
        local pong
        pong=$(http_get "$PROXY_PORT" shop.test /ping 2>/dev/null || true)
        if [[ "$pong" != "HTTP/1.1 200"* || "$pong" != *pong ]]; then
            log "$name: GET shop.test/ping did not answer 200 pong:"
            printf '%s\n' "$pong" | head -n 12 >&2
            R_NOTE[$name]="mix routing check failed (see above)"
            stop_all_but_backend
            return 0
        fi
    fi
    mapfile -t pids < <(proc_tree "$pid")
    measure "$name" "$PROXY_PORT" "${pids[@]}" || true
    if [[ "$name" == trellis-log ]]; then
        # Lines the writer dropped would make the comparison unfair: say how many were written and dropped.
        local metrics written dropped
        metrics=$(http_get "$ADMIN_PORT" localhost /metrics 2>/dev/null || true)
        written=$(awk '$1 == "trellis_access_log_lines_total" {print $2}' <<<"$metrics")
        dropped=$(awk '$1 == "trellis_access_log_dropped_total" {print $2}' <<<"$metrics")
        R_NOTE[$name]="${R_NOTE[$name]:+${R_NOTE[$name]}; }log: ${written:-?} lines, ${dropped:-?} dropped, $(du -h "${ACCESS_LOG:-$WORKDIR/access.log}" 2>/dev/null | cut -f1)"
    fi
    stop_all_but_backend
}

stop_all_but_backend() {
    local keep=("$BACKEND_PID")
    STARTED=("${STARTED[@]:1}") # the backend is always first
    stop_all
    STARTED=("${keep[@]}")
}

# ---------------------------------------------------------------------------------------------- run
if [[ "$SCENARIO" == https ]]; then
    # One certificate for every proxy: ECDSA P-256, as a production site would serve.
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=loadtest -addext "subjectAltName=DNS:loadtest,IP:127.0.0.1" \
        -keyout "$WORKDIR/tls.key" -out "$WORKDIR/tls.pem" 2>/dev/null || die "openssl could not make a certificate"
    cat "$WORKDIR/tls.pem" "$WORKDIR/tls.key" >"$WORKDIR/tls-bundle.pem" # HAProxy wants both in one file
    chmod 644 "$WORKDIR/tls.key" "$WORKDIR/tls-bundle.pem"             # nginx workers may run as another user
fi
BACKEND_PORT=$(free_port)
log "backend: taskset -c $LOAD_CORE $ECHO_BIN echo --listen 127.0.0.1:$BACKEND_PORT --workers 1"
start echo "$LOAD_CORE" "$ECHO_BIN" echo --listen "127.0.0.1:$BACKEND_PORT" --workers 1
BACKEND_PID=$PID
wait_ready echo "$BACKEND_PORT" "$BACKEND_PID" || die "the echo backend did not start (is \`trellis echo\` wired in this build?)"

for name in direct trellis trellis-log trellis-auth nginx nginx-log haproxy; do
    want_peer "$name" && peer "$name"
done

# ------------------------------------------------------------------------------------------- report
version_of() {
    case "$1" in
        direct) echo "backend only" ;;
        trellis | trellis-log | trellis-auth) echo "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo '+dirty')" ;;
        nginx | nginx-log) "$NGINX" -v 2>&1 | sed 's|.*nginx/||' ;;
        haproxy) "$HAPROXY" -v 2>/dev/null | awk 'NR == 1 {sub(/-.*/, "", $3); print $3}' ;;
    esac
}
fmt_ms() { [[ -n "${1:-}" ]] && awk -v u="$1" 'BEGIN { printf "%.3f", u / 1000 }' || echo "-"; }
ratio() { # ratio A B
    if [[ -n "${1:-}" && -n "${2:-}" ]] && awk -v b="$2" 'BEGIN { exit !(b > 0) }'; then
        awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'
    else
        echo "n/a"
    fi
}

echo
echo "trellis load test: scenario=$SCENARIO, wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency, warm-up $WARMUP"
echo "proxy pinned to core $PROXY_CORE (1 worker); echo backend + wrk pinned to core $LOAD_CORE; $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: //')"
echo
printf '%-11s %-14s %12s %10s %10s %14s %14s  %s\n' peer version 'req/s' 'p50 ms' 'p99 ms' 'proxy µs/req' 'echo µs/req' notes
printf '%-11s %-14s %12s %10s %10s %14s %14s  %s\n' ----------- -------------- ------------ ---------- ---------- -------------- -------------- -----
for name in "${ORDER[@]}"; do
    printf '%-11s %-14s %12s %10s %10s %14s %14s  %s\n' "$name" "$(version_of "$name")" \
        "${R_RPS[$name]:--}" "$(fmt_ms "${R_P50[$name]:-}")" "$(fmt_ms "${R_P99[$name]:-}")" \
        "${R_CPU[$name]:--}" "${R_ECHO[$name]:--}" "${R_NOTE[$name]:-}"
done
echo
if [[ " ${ORDER[*]} " == *" trellis "* && " ${ORDER[*]} " == *" trellis-log "* ]]; then
    printf 'access log on/off  req/s %-7s p99 %-7s CPU/request %-7s\n' \
        "$(ratio "${R_RPS[trellis-log]:-}" "${R_RPS[trellis]:-}")" \
        "$(ratio "${R_P99[trellis-log]:-}" "${R_P99[trellis]:-}")" \
        "$(ratio "${R_CPU[trellis-log]:-}" "${R_CPU[trellis]:-}")"
fi
if [[ " ${ORDER[*]} " == *" trellis "* && " ${ORDER[*]} " == *" trellis-auth "* ]]; then
    printf 'auth policy on/off req/s %-7s p99 %-7s CPU/request %-7s\n' \
        "$(ratio "${R_RPS[trellis-auth]:-}" "${R_RPS[trellis]:-}")" \
        "$(ratio "${R_P99[trellis-auth]:-}" "${R_P99[trellis]:-}")" \
        "$(ratio "${R_CPU[trellis-auth]:-}" "${R_CPU[trellis]:-}")"
fi
if [[ " ${ORDER[*]} " == *" nginx "* && " ${ORDER[*]} " == *" nginx-log "* ]]; then
    printf 'nginx log on/off   req/s %-7s p99 %-7s CPU/request %-7s\n' \
        "$(ratio "${R_RPS[nginx-log]:-}" "${R_RPS[nginx]:-}")" \
        "$(ratio "${R_P99[nginx-log]:-}" "${R_P99[nginx]:-}")" \
        "$(ratio "${R_CPU[nginx-log]:-}" "${R_CPU[nginx]:-}")"
fi
for other in nginx haproxy; do
    [[ " ${ORDER[*]} " == *" trellis "* && " ${ORDER[*]} " == *" $other "* ]] || continue
    printf 'trellis/%-8s req/s %-7s p99 %-7s CPU/request %-7s\n' "$other" \
        "$(ratio "${R_RPS[trellis]:-}" "${R_RPS[$other]:-}")" \
        "$(ratio "${R_P99[trellis]:-}" "${R_P99[$other]:-}")" \
        "$(ratio "${R_CPU[trellis]:-}" "${R_CPU[$other]:-}")"
done
echo "(req/s: higher is better; p99 and CPU/request: lower is better. CPU from /proc/PID/stat utime+stime,"
echo " ${CLK_TCK} ticks/s, over the measured run, divided by the requests wrk completed.)"
