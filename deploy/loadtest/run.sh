#!/usr/bin/env bash
# Load test: trellis vs nginx vs HAProxy, same run, same backend, same pinning.
#
#   deploy/loadtest/run.sh                      # plain scenario, 10s per peer
#   DURATION=30s SCENARIO=mix deploy/loadtest/run.sh          # hosts, rules, a canary, a 90/10 split
#   SCENARIO=mix-post deploy/loadtest/run.sh     # the same routing, with 1-16 KB bodies and query strings
#   SCENARIO=https deploy/loadtest/run.sh        # wrk over TLS to the proxies (plain HTTP to the backend)
#   PEERS="direct trellis" TRELLIS_BIN=/path/to/trellis deploy/loadtest/run.sh
#   PEERS="trellis trellis-log nginx nginx-log" deploy/loadtest/run.sh   # access logs' cost: off vs to a file
#   PEERS="trellis trellis-auth" deploy/loadtest/run.sh   # a 10-statement auth policy's cost
#   SCENARIO=idle IDLE=9000 deploy/loadtest/run.sh      # memory per idle keep-alive connection (no wrk)
#   SCENARIO=h2c deploy/loadtest/run.sh          # HTTP/2 with prior knowledge to the proxies, h2load
#   SCENARIO=tls-handshake deploy/loadtest/run.sh   # a new TLS connection for every request
#   SCENARIO=tls-resume deploy/loadtest/run.sh      # a new TLS connection for every request, session resumed
#
# `trellis echo` backends pinned to core LOAD_CORE (default 1) with wrk; each proxy runs one worker
# pinned to core PROXY_CORE (default 0). For each peer: req/s, p50, p99 (wrk --latency) and the proxy's
# CPU time per request (utime+stime from /proc/PID/stat, before/after the run). In the mix scenarios every
# proxy is first checked to route each request of the mix to the right backend. See README.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}                # a short unmeasured wrk run before each measured one; 0 to skip
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
SCENARIO=${SCENARIO:-plain}         # plain | mix | mix-post | https
PEERS=${PEERS:-direct trellis trellis-log nginx haproxy}
PROXY_CORE=${PROXY_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}
TRELLIS_BIN=${TRELLIS_BIN:-}        # default: cargo build --release -p trellis, then $CARGO_TARGET_DIR/release/trellis
ECHO_BIN=${ECHO_BIN:-}              # binary providing `echo` (default: the trellis binary)
NO_BUILD=${NO_BUILD:-0}             # 1: don't run cargo, use the release binary as it is
SPLIT_SAMPLES=${SPLIT_SAMPLES:-200} # mix scenarios: requests sent to the weighted split to check its shares
KEEP=${KEEP:-0}                     # 1: keep the work directory (configs, logs, raw wrk output)
ACCESS_LOG=${ACCESS_LOG:-}          # trellis-log's access log file (default: in the work directory)
READY_TIMEOUT=${READY_TIMEOUT:-15}  # seconds a server gets to answer its first request
IDLE=${IDLE:-9000}                  # idle scenario: keep-alive connections held open (each after one request)
WORKERS=${WORKERS:-1}               # proxy workers: trellis --workers, nginx worker_processes, HAProxy nbthread
TG_EXTRA=${TG_EXTRA:-}              # lines added to trellis's target groups (e.g. a retry policy), \n-separated

usage() {
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
    cat <<EOF

Environment: DURATION=$DURATION WARMUP=$WARMUP CONNECTIONS=$CONNECTIONS THREADS=$THREADS SCENARIO=$SCENARIO
             PEERS="$PEERS" PROXY_CORE=$PROXY_CORE LOAD_CORE=$LOAD_CORE
             TRELLIS_BIN ECHO_BIN NO_BUILD KEEP READY_TIMEOUT SPLIT_SAMPLES=$SPLIT_SAMPLES IDLE=$IDLE WORKERS=$WORKERS
             TG_EXTRA
EOF
}
case "${1:-}" in
    -h | --help) usage; exit 0 ;;
    "") ;;
    *) echo "run.sh: unknown argument '$1' (settings are environment variables; see --help)" >&2; exit 2 ;;
esac

log() { printf '>> %s\n' "$*" >&2; }
die() { printf 'run.sh: %s\n' "$*" >&2; exit 1; }

# The mix scenarios: one request list (METHOD HOST PATH BODY_BYTES EXPECT [NAME:VALUE...]) drives both wrk
# (mix.lua) and the correctness check, so the check covers exactly what is measured. Each target group of
# the mix configs has its own backend, named after it, so `x-served-by` tells which group answered.
SCHEME=http
WRK_OPTS=() # wrk options of the scenario (before the URL)
REQUESTS=""
BACKENDS=(echo)
case "$SCENARIO" in
    plain) SUFFIX="" ;;
    mix | mix-post) SUFFIX="-mix"; REQUESTS="$HERE/$SCENARIO.requests"; BACKENDS=(web static api-v1 api-v2) ;;
    https) SUFFIX="-https"; SCHEME=https ;;
    # Every request on a new connection: requests/s are full TLS handshakes per second (ECDSA P-256).
    tls-handshake) SUFFIX="-https"; SCHEME=https; WRK_OPTS=(-H "Connection: close"); PEERS=" $PEERS "; PEERS=${PEERS// direct / } ;;
    # The same, each connection resuming the session of the first (openssl s_time -reuse; one client).
    tls-resume) SUFFIX="-https"; SCHEME=https; PEERS=" $PEERS "; PEERS=${PEERS// direct / } ;;
    idle) SUFFIX=""; PEERS=" $PEERS "; PEERS=${PEERS// direct / } ;; # nothing to hold open without a proxy
    # h2c: the same routing as plain; h2load (16 connections x 10 streams) speaks HTTP/2 with prior
    # knowledge to each proxy, which speaks HTTP/1.1 to the backend (it has no h2c). No `direct` row.
    h2c) SUFFIX=""; SCHEME=h2c; PEERS=" $PEERS "; PEERS=${PEERS// direct / } ;;
    *) die "SCENARIO must be plain, mix, mix-post, https, tls-handshake, tls-resume, h2c or idle, not '$SCENARIO'" ;;
esac
WRK_SCRIPT=()
WRK_ARGS=()
if [[ -n "$REQUESTS" ]]; then
    WRK_SCRIPT=(-s "$HERE/mix.lua")
    WRK_ARGS=(-- "$REQUESTS")
fi

# ---------------------------------------------------------------------------------------------- tools
missing=()
tools=(wrk taskset getconf)
[[ "$SCHEME" == https ]] && tools+=(openssl curl)
[[ -n "$REQUESTS" ]] && tools+=(curl)
[[ "$SCENARIO" == idle ]] && tools+=(python3)
[[ "$SCENARIO" == h2c ]] && tools+=(h2load curl)
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
    # Where cargo puts it: CARGO_TARGET_DIR (relative to the workspace, as cargo reads it there) or target/.
    target_dir=${CARGO_TARGET_DIR:-target}
    [[ "$target_dir" == /* ]] || target_dir=$ROOT/$target_dir
    TRELLIS_BIN=$target_dir/release/trellis
    if [[ "$NO_BUILD" != 1 ]] && command -v cargo >/dev/null 2>&1; then
        log "cargo build --release -p trellis"
        (cd "$ROOT" && cargo build --release -p trellis) >&2 || die "cargo build --release -p trellis failed"
    fi
fi
[[ -x "$TRELLIS_BIN" ]] || die "no trellis binary at $TRELLIS_BIN (cargo build --release -p trellis, or set TRELLIS_BIN)"
ECHO_BIN=${ECHO_BIN:-$TRELLIS_BIN}

# Every proxy (and the idle client) needs a descriptor per connection.
if [[ "$SCENARIO" == idle ]]; then
    ulimit -n $((3 * IDLE + 8192)) 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
    (( $(ulimit -n) > IDLE + 100 )) || die "ulimit -n is $(ulimit -n): too few descriptors for IDLE=$IDLE (run as root, or lower IDLE)"
fi

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

# h2c_get PORT HOST PATH: the same over HTTP/2 with prior knowledge (curl); the status line is rewritten
# as HTTP/1.1's so that the readiness check reads one form.
h2c_get() {
    curl -s -i --http2-prior-knowledge --max-time 2 -H "Host: $2" "http://127.0.0.1:$1$3" | sed '1s|^HTTP/2 |HTTP/1.1 |'
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
        if resp=$("${scheme}_get" "$port" loadtest / 2>/dev/null) && [[ "$resp" == "HTTP/1.1 200"* && "$resp" == *"hello from"* ]]; then
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

render() { # render TEMPLATE OUT: fills @PLACEHOLDERS@ (@PORT_API_V1@: the port of backend api-v1)
    local args=(-e "s|@WORKDIR@|$WORKDIR|g" -e "s|@PROXY_PORT@|$PROXY_PORT|g"
        -e "s|@BACKEND_PORT@|$BACKEND_PORT|g" -e "s|@ADMIN_PORT@|$ADMIN_PORT|g") b
    for b in "${BACKENDS[@]}"; do
        args+=(-e "s|@PORT_$(tr 'a-z-' 'A-Z_' <<<"$b")@|${BACKEND_PORTS[$b]}|g")
    done
    sed "${args[@]}" "$1" >"$2"
    if grep -n '^[^#]*@[A-Z_0-9]*@' "$2" >&2; then die "$1: placeholders left unfilled (above)"; fi
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
    taskset -c "$LOAD_CORE" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$dur" "$@" "${WRK_OPTS[@]}" "${WRK_SCRIPT[@]}" \
        "$scheme://127.0.0.1:$port/" "${WRK_ARGS[@]}"
}

# run_h2load PORT SECONDS: h2load pinned with the backend, 16 connections x 10 concurrent streams.
run_h2load() {
    taskset -c "$LOAD_CORE" h2load -c16 -m10 -D "$2" "http://127.0.0.1:$1/"
}

# measure_h2c NAME PORT PROXY_PIDS...: as measure, with h2load (req/s, mean latency, CPU per request).
measure_h2c() {
    local name=$1 port=$2
    shift 2
    local pids=("$@") out="$WORKDIR/$name.h2load" c0 c1 e0 e1 reqs secs failed
    secs=$(awk -v d="$DURATION" 'BEGIN { n = d + 0; if (d ~ /m$/) n *= 60; print (n < 1 ? 1 : int(n)) }')
    if [[ "$WARMUP" != 0 && "$WARMUP" != 0s ]]; then
        run_h2load "$port" "$(awk -v d="$WARMUP" 'BEGIN { n = d + 0; print (n < 1 ? 1 : int(n)) }')" >/dev/null 2>&1 || true
    fi
    log "$name: h2load -c16 -m10 -D $secs http://127.0.0.1:$port/"
    c0=$(ticks "${pids[@]}")
    e0=$(ticks "${BACKEND_PIDS[@]}")
    if ! run_h2load "$port" "$secs" >"$out" 2>&1; then
        R_NOTE[$name]="h2load failed: $(tail -n 1 "$out")"
        return 1
    fi
    c1=$(ticks "${pids[@]}")
    e1=$(ticks "${BACKEND_PIDS[@]}")
    reqs=$(awk '/^requests:/ {print $8; exit}' "$out")       # succeeded
    failed=$(awk '/^requests:/ {print $10 + $12; exit}' "$out") # failed + errored
    R_RPS[$name]=$(awk '/^finished in/ {gsub(",", "", $4); print $4; exit}' "$out")
    R_P50[$name]=$(to_us "$(awk '/^time for request:/ {print $6; exit}' "$out")") # the mean (h2load has no percentiles)
    R_BAD[$name]=${failed:-0}
    if ((${#pids[@]} && ${reqs:-0} > 0)); then
        R_CPU[$name]=$(awk -v d=$((c1 - c0)) -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN { printf "%.2f", d / hz * 1e6 / n }')
        R_ECHO[$name]=$(awk -v d=$((e1 - e0)) -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN { printf "%.2f", d / hz * 1e6 / n }')
    fi
    [[ "${R_BAD[$name]}" != 0 ]] && R_NOTE[$name]="${R_BAD[$name]} requests failed"
    return 0
}

# measure_resume NAME PORT PROXY_PIDS...: resumed TLS handshakes, one per connection, each with one GET /
# (openssl s_time -reuse: a full handshake first, then every connection resumes its session), CPU per
# connection. s_time reports no latency.
measure_resume() {
    local name=$1 port=$2
    shift 2
    local pids=("$@") out="$WORKDIR/$name.s_time" c0 c1 e0 e1 conns secs t0 t1
    secs=$(awk -v d="$DURATION" 'BEGIN { n = d + 0; if (d ~ /m$/) n *= 60; print (n < 1 ? 1 : int(n)) }')
    log "$name: openssl s_time -connect 127.0.0.1:$port -reuse -time $secs -www /"
    c0=$(ticks "${pids[@]}")
    e0=$(ticks "${BACKEND_PIDS[@]}")
    t0=$(date +%s.%N)
    if ! taskset -c "$LOAD_CORE" openssl s_time -connect "127.0.0.1:$port" -reuse -time "$secs" -www / >"$out" 2>&1; then
        R_NOTE[$name]="s_time failed: $(tail -n 1 "$out")"
        return 1
    fi
    t1=$(date +%s.%N)
    c1=$(ticks "${pids[@]}")
    e1=$(ticks "${BACKEND_PIDS[@]}")
    # "N connections in S real seconds, B bytes read per connection" (S in whole seconds: timed here)
    conns=$(awk '/connections in .* real seconds/ {print $1; exit}' "$out")
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
    if ((${conns:-0} == 0)); then
        R_NOTE[$name]="s_time made no connection: $(tail -n 1 "$out")"
        return 1
    fi
    R_RPS[$name]=$(awk -v n="$conns" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')
    if ((${#pids[@]})); then
        R_CPU[$name]=$(awk -v d=$((c1 - c0)) -v hz="$CLK_TCK" -v n="$conns" 'BEGIN { printf "%.2f", d / hz * 1e6 / n }')
        R_ECHO[$name]=$(awk -v d=$((e1 - e0)) -v hz="$CLK_TCK" -v n="$conns" 'BEGIN { printf "%.2f", d / hz * 1e6 / n }')
    fi
    return 0
}

# measure NAME PORT PROXY_PIDS...: warm-up, then the measured run; fills the R_* tables.
measure() {
    local name=$1 port=$2
    shift 2
    local pids=("$@") out="$WORKDIR/$name.wrk" c0 c1 e0 e1 reqs
    if [[ "$WARMUP" != 0 && "$WARMUP" != 0s ]]; then
        run_wrk "$port" "$WARMUP" >/dev/null 2>&1 || true
    fi
    log "$name: wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency ${WRK_SCRIPT[*]} $SCHEME://127.0.0.1:$port/ ${WRK_ARGS[*]}"
    c0=$(ticks "${pids[@]}")
    e0=$(ticks "${BACKEND_PIDS[@]}")
    if ! run_wrk "$port" "$DURATION" --latency >"$out" 2>&1; then
        R_NOTE[$name]="wrk failed: $(tail -n 1 "$out")"
        return 1
    fi
    c1=$(ticks "${pids[@]}")
    e1=$(ticks "${BACKEND_PIDS[@]}")
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

# rss_kib PID...: resident memory (VmRSS) summed over the given processes, in KiB.
rss_kib() {
    local pid total=0 kib
    for pid in "$@"; do
        kib=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null) || continue
        total=$((total + ${kib:-0}))
    done
    echo "$total"
}

declare -A R_RSS0 R_RSS1 R_RSS2 R_PERCONN
# measure_idle NAME PORT PROXY_PIDS...: memory with $IDLE idle keep-alive connections (each after one
# request, so every buffer a request needs has been allocated), and after they close.
measure_idle() {
    local name=$1 port=$2
    shift 2
    local pids=("$@") line
    # A few requests first: what a connection-less server allocates once is not counted per connection.
    for _ in 1 2 3; do http_get "$port" loadtest / >/dev/null 2>&1 || true; done
    sleep 0.5
    R_RSS0[$name]=$(rss_kib "${pids[@]}")
    local live0=""
    [[ "$name" == trellis* ]] && live0=$(trellis_allocated)
    log "$name: $IDLE idle keep-alive connections (python3 idle.py $port $IDLE)"
    coproc IDLE_CLIENT { taskset -c "$LOAD_CORE" python3 "$HERE/idle.py" "$port" "$IDLE" 2>&1; }
    if ! read -r -t 120 line <&"${IDLE_CLIENT[0]}" || [[ "$line" != "ready $IDLE" ]]; then
        R_NOTE[$name]="idle clients failed: ${line:-no answer}"
        kill "$IDLE_CLIENT_PID" 2>/dev/null || true
        return 1
    fi
    sleep 8 # settled: trellis parks an idle connection after 1 s; freed pages go back after about 1 s
    R_RSS1[$name]=$(rss_kib "${pids[@]}")
    if [[ -n "$live0" ]]; then
        # What the allocator counts as in use, as opposed to the pages RSS sees (fragmentation included).
        local live1
        live1=$(trellis_allocated)
        [[ -n "$live1" ]] && R_NOTE[$name]="live allocations $(awk -v a="$live1" -v b="$live0" -v n="$IDLE" 'BEGIN { printf "%.0f", (a - b) / n }') B/conn"
    fi
    exec {IDLE_CLIENT[1]}>&- # end of input: the client closes every connection
    read -r -t 60 line <&"${IDLE_CLIENT[0]}" || true
    wait "$IDLE_CLIENT_PID" 2>/dev/null || true
    sleep 2 # closed connections are reaped by the proxy's event loop, not at once
    R_RSS2[$name]=$(rss_kib "${pids[@]}")
    R_PERCONN[$name]=$(awk -v a="${R_RSS1[$name]}" -v b="${R_RSS0[$name]}" -v n="$IDLE" 'BEGIN { printf "%.2f", (a - b) / n }')
}

# ------------------------------------------------------------------------------- the mix's correctness
declare -A R_CHECK

# body_file BYTES: a file of BYTES bytes shaped as mix.lua shapes its bodies ({"pad":"aaa..."}).
body_file() {
    local n=$1 file="$WORKDIR/body-$1"
    if [[ ! -f "$file" ]]; then
        if ((n < 12)); then
            head -c "$n" /dev/zero | tr '\0' a >"$file"
        else
            { printf '{"pad":"'; head -c $((n - 10)) /dev/zero | tr '\0' a; printf '"}'; } >"$file"
        fi
    fi
    echo "$file"
}

# mix_curl_args METHOD HOST BYTES [NAME:VALUE...]: sets CURL_ARGS to send one request of the mix as
# mix.lua sends it (the same method, Host, headers and body size; JSON unless a content-type is given).
mix_curl_args() {
    local method=$1 host=$2 bytes=$3 h name typed=0
    shift 3
    CURL_ARGS=(-s --http1.1 --max-time 5 -X "$method" -H "Host: $host")
    for h in "$@"; do
        name=${h%%:*}
        CURL_ARGS+=(-H "$name: ${h#*:}")
        [[ "${name,,}" == content-type ]] && typed=1
    done
    if ((bytes > 0)); then
        ((typed)) || CURL_ARGS+=(-H "Content-Type: application/json")
        CURL_ARGS+=(--data-binary "@$(body_file "$bytes")")
    fi
}

# verify_mix NAME PORT: sends each request of $REQUESTS once through the proxy and checks its EXPECT:
#   web               200 from the backend named web (its x-served-by)
#   api-v1:90,api-v2:10  200 from one of them; then SPLIT_SAMPLES more requests must split by the weights
#   =pong             200 with exactly that body and no backend (a fixed response)
# Sets R_CHECK[NAME] to a one-line summary; returns 1 on any mismatch (each one logged).
verify_mix() {
    local name=$1 port=$2 line method host path bytes expect headers status served body got want
    local checked=0 failed=0 split=()
    while IFS= read -r line; do
        line=${line%%#*} # comments: paths never hold a '#' (a fragment is not sent)
        read -r method host path bytes expect headers <<<"$line"
        [[ -z "$method" ]] && continue
        # shellcheck disable=SC2086 # headers: NAME:VALUE words, split on purpose
        mix_curl_args "$method" "$host" "$bytes" $headers
        status=$(curl "${CURL_ARGS[@]}" -D "$WORKDIR/check.headers" -o "$WORKDIR/check.body" \
            -w '%{http_code}' "http://127.0.0.1:$port$path") || status="no answer"
        served=$(awk -F': *' 'tolower($1) == "x-served-by" { sub(/\r$/, "", $2); print $2 }' "$WORKDIR/check.headers" 2>/dev/null || true)
        body=$(cat "$WORKDIR/check.body" 2>/dev/null || true)
        got="$status${served:+ from $served}"
        case "$expect" in
            =*) want="200 '${expect#=}' from no backend"
                [[ "$status" == 200 && "$body" == "${expect#=}" && -z "$served" ]] ;;
            *,*) want="200 from one of ${expect}"
                # shellcheck disable=SC2206 # headers: NAME:VALUE words, split on purpose
                ((${#split[@]})) || split=("$method" "$host" "$path" "$bytes" "$expect" $headers)
                [[ "$status" == 200 && -n "$served" && ",$expect" == *",$served:"* ]] ;;
            *) want="200 from $expect"
                [[ "$status" == 200 && "$served" == "$expect" ]] ;;
        esac || {
            log "$name: $method $host$path${headers:+ ($headers)}: want $want, got $got${body:+, body: ${body:0:60}}"
            failed=$((failed + 1))
        }
        checked=$((checked + 1))
    done <"$REQUESTS"
    R_CHECK[$name]="routing $((checked - failed))/$checked ok"
    if ((${#split[@]})) && ! verify_split "$name" "$port" "${split[@]}"; then
        failed=$((failed + 1))
    fi
    ((failed == 0))
}

# verify_split NAME PORT METHOD HOST PATH BYTES EXPECT [HEADERS...]: SPLIT_SAMPLES requests over one
# keep-alive connection; every answer must come from a group of EXPECT, and each group's count must lie
# within 4 standard deviations of its weight's share (a binomial count: a correct proxy fails this less
# than once in 10000 runs; one that ignores the weights, or splits 50/50, always does).
verify_split() {
    local name=$1 port=$2 method=$3 host=$4 path=$5 bytes=$6 expect=$7 i urls=() counts
    shift 7
    mix_curl_args "$method" "$host" "$bytes" "$@"
    for ((i = 0; i < SPLIT_SAMPLES; i++)); do urls+=(-o /dev/null "http://127.0.0.1:$port$path"); done
    # A failed transfer prints 000 and counts as "not 200"; curl's own exit status adds nothing.
    counts=$({ curl "${CURL_ARGS[@]}" -w '%{http_code} %header{x-served-by}\n' "${urls[@]}" || true; } |
        awk -v expect="$expect" -v n="$SPLIT_SAMPLES" '
            BEGIN { k = split(expect, parts, ","); for (j = 1; j <= k; j++) { split(parts[j], nw, ":"); names[j] = nw[1]; w[j] = nw[2]; total += nw[2] } }
            { seen++; if ($1 == 200) count[$2]++; else bad++ }
            END {
                ok = (seen == n && bad == 0)
                for (j = 1; j <= k; j++) {
                    p = w[j] / total; c = count[names[j]] + 0; other -= c
                    if ((c - n * p) ^ 2 > (4 * sqrt(n * p * (1 - p)) + 1) ^ 2) ok = 0
                    sep = j > 1 ? "/" : ""; who = who sep names[j]; got = got sep c; want = want sep w[j]
                }
                for (s in count) other += count[s]
                if (other != 0) ok = 0
                printf "%s %s = %s of %d (weights %s)", ok ? "ok" : "FAIL", who, got, n, want
                if (bad || other) printf "; %d not 200, %d from other backends", bad, other
                printf "\n"
            }')
    R_CHECK[$name]+=", split ${counts#* }"
    if [[ "$counts" != ok* ]]; then
        log "$name: $method $host$path x$SPLIT_SAMPLES: ${counts#* }"
        return 1
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
            add_tg_extra "$WORKDIR/trellis.toml"
            start trellis "$PROXY_CORE" "$TRELLIS_BIN" run -c "$WORKDIR/trellis.toml" --workers "$WORKERS"
            ;;
        trellis-log)
            # The same, with every request written to an access log file (metrics are always on).
            render "$HERE/trellis$SUFFIX.toml.tmpl" "$WORKDIR/trellis-log.toml"
            sed -i "s|^destination = \"off\"|destination = \"${ACCESS_LOG:-$WORKDIR/access.log}\"|" "$WORKDIR/trellis-log.toml"
            grep -q '^destination = "/' "$WORKDIR/trellis-log.toml" || die "trellis-log: no access_log destination to replace in the template"
            start trellis-log "$PROXY_CORE" "$TRELLIS_BIN" run -c "$WORKDIR/trellis-log.toml" --workers "$WORKERS"
            ;;
        trellis-auth)
            # The same, with the 10-statement network policy of auth-policy.toml on every request.
            render "$HERE/trellis$SUFFIX.toml.tmpl" "$WORKDIR/trellis-auth.toml"
            cat "$HERE/auth-policy.toml" >>"$WORKDIR/trellis-auth.toml"
            start trellis-auth "$PROXY_CORE" "$TRELLIS_BIN" run -c "$WORKDIR/trellis-auth.toml" --workers "$WORKERS"
            ;;
        nginx | nginx-log)
            render "$HERE/nginx$SUFFIX.conf.tmpl" "$WORKDIR/nginx.conf"
            sed -i "s|^worker_processes 1;|worker_processes $WORKERS;|" "$WORKDIR/nginx.conf"
            [[ "$SCENARIO" == idle ]] && sed -i "s|worker_connections [0-9]*;|worker_connections $((IDLE + 1024));|" "$WORKDIR/nginx.conf"
            [[ "$SCENARIO" == h2c ]] && sed -i "s|listen 127.0.0.1:$PROXY_PORT;|listen 127.0.0.1:$PROXY_PORT http2;|" "$WORKDIR/nginx.conf"
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
            sed -i "s|^    nbthread 1\$|    nbthread $WORKERS|" "$WORKDIR/haproxy.cfg"
            # HAProxy sizes its descriptors for two per connection (client and server side); idle
            # client connections need one each, so it is told the limit there is rather than refusing it.
            [[ "$SCENARIO" == idle ]] && sed -i -e "s|maxconn [0-9]*|maxconn $((IDLE + 100))|" \
                -e "s|^global|global\n    ulimit-n $(ulimit -n)|" "$WORKDIR/haproxy.cfg"
            [[ "$SCENARIO" == h2c ]] && sed -i "s|bind 127.0.0.1:$PROXY_PORT\$|bind 127.0.0.1:$PROXY_PORT proto h2|" "$WORKDIR/haproxy.cfg"
            start haproxy "$PROXY_CORE" "$HAPROXY" -db -f "$WORKDIR/haproxy.cfg"
            ;;
    esac
    local pid=$PID
    if ! wait_ready "$name" "$PROXY_PORT" "$pid" "$SCHEME"; then
        R_NOTE[$name]="did not start or did not forward (see above)"
        stop_all_but_backend
        return 0
    fi
    if [[ -n "$REQUESTS" ]]; then
        # Only a proxy that routes the mix as trellis does is measured: the numbers compare equal work.
        if ! verify_mix "$name" "$PROXY_PORT"; then
            R_NOTE[$name]="not measured: ${R_CHECK[$name]:-mix check failed} (see above)"
            stop_all_but_backend
            return 0
        fi
    fi
    mapfile -t pids < <(proc_tree "$pid")
    if [[ "$SCENARIO" == idle ]]; then
        measure_idle "$name" "$PROXY_PORT" "${pids[@]}" || true
        stop_all_but_backend
        return 0
    fi
    if [[ "$SCENARIO" == h2c ]]; then
        measure_h2c "$name" "$PROXY_PORT" "${pids[@]}" || true
    elif [[ "$SCENARIO" == tls-resume ]]; then
        measure_resume "$name" "$PROXY_PORT" "${pids[@]}" || true
    else
        measure "$name" "$PROXY_PORT" "${pids[@]}" || true
    fi
    [[ -n "${R_CHECK[$name]:-}" ]] && R_NOTE[$name]="${R_CHECK[$name]}${R_NOTE[$name]:+; ${R_NOTE[$name]}}"
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

# add_tg_extra FILE: TG_EXTRA's lines right after each `[[target_group]]`'s `name = ...` line.
add_tg_extra() {
    [[ -n "$TG_EXTRA" ]] || return 0
    local tmp="$1.tmp"
    awk -v extra="$TG_EXTRA" '
        { print }
        /^\[\[target_group\]\]/ { in_tg = 1; next }
        in_tg && /^name = / { gsub(/\\n/, "\n", extra); print extra; in_tg = 0 }
    ' "$1" >"$tmp" && mv "$tmp" "$1"
}

# trellis_allocated: the bytes trellis's allocator counts as allocated (its /metrics).
trellis_allocated() {
    http_get "$ADMIN_PORT" localhost /metrics 2>/dev/null | awk '$1 == "trellis_memory_allocated_bytes" {print $2}'
}

stop_all_but_backend() {
    local n=${#BACKEND_PIDS[@]}
    STARTED=("${STARTED[@]:n}") # the backends are always first
    stop_all
    STARTED=("${BACKEND_PIDS[@]}")
}

# ---------------------------------------------------------------------------------------------- run
if [[ "$SCHEME" == https ]]; then
    # One certificate for every proxy: ECDSA P-256, as a production site would serve.
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=loadtest -addext "subjectAltName=DNS:loadtest,IP:127.0.0.1" \
        -keyout "$WORKDIR/tls.key" -out "$WORKDIR/tls.pem" 2>/dev/null || die "openssl could not make a certificate"
    cat "$WORKDIR/tls.pem" "$WORKDIR/tls.key" >"$WORKDIR/tls-bundle.pem" # HAProxy wants both in one file
    chmod 644 "$WORKDIR/tls.key" "$WORKDIR/tls-bundle.pem"             # nginx workers may run as another user
fi
declare -A BACKEND_PORTS
BACKEND_PIDS=()
for b in "${BACKENDS[@]}"; do
    BACKEND_PORTS[$b]=$(free_port)
    name_arg=()
    [[ "$b" != echo ]] && name_arg=(--name "$b") # plain/https: the default name, the backend's address
    log "backend $b: taskset -c $LOAD_CORE $ECHO_BIN echo --listen 127.0.0.1:${BACKEND_PORTS[$b]} ${name_arg[*]} --workers 1"
    start "backend-$b" "$LOAD_CORE" "$ECHO_BIN" echo --listen "127.0.0.1:${BACKEND_PORTS[$b]}" "${name_arg[@]}" --workers 1
    BACKEND_PIDS+=("$PID")
    wait_ready "backend-$b" "${BACKEND_PORTS[$b]}" "$PID" || die "the echo backend did not start (is \`trellis echo\` wired in this build?)"
done
# `direct` (and the plain and https templates) use the first backend.
BACKEND_PORT=${BACKEND_PORTS[${BACKENDS[0]}]}

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
fmt_ms() { [[ -n "${1:-}" ]] && awk -v u="$1" 'BEGIN { printf "%.2f", u / 1000 }' || echo "-"; }
fmt_int() { [[ -n "${1:-}" ]] && awk -v n="$1" 'BEGIN { printf "%.0f", n }' || echo "-"; }
ratio() { # ratio A B
    if [[ -n "${1:-}" && -n "${2:-}" ]] && awk -v b="$2" 'BEGIN { exit !(b > 0) }'; then
        awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'
    else
        echo "n/a"
    fi
}
# Cells padded by characters, not bytes (printf's %10s counts µ as two): left- and right-aligned.
lcell() { local t=${2//µ/u}; printf '%s%*s' "$2" $(($1 > ${#t} ? $1 - ${#t} : 0)) ''; }
rcell() { local t=${2//µ/u}; printf '%*s%s' $(($1 > ${#t} ? $1 - ${#t} : 0)) '' "$2"; }
# row PEER VERSION REQ/S P50 P99 PROXY-CPU BACKEND-CPU NOTES
row() {
    lcell 11 "$1"; printf ' '; lcell 15 "$2"; printf ' '; rcell 8 "$3"; printf ' '; rcell 7 "$4"; printf ' '
    rcell 7 "$5"; printf ' '; rcell 11 "$6"; printf ' '; rcell 11 "$7"; printf '%s\n' "${8:+  $8}"
}

if [[ "$SCENARIO" == idle ]]; then
    fmt_mb() { [[ -n "${1:-}" ]] && awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }' || echo "-"; }
    echo
    echo "trellis load test: scenario=idle: $IDLE keep-alive connections, each idle after one GET /; proxy: $WORKERS worker(s) on core(s) $PROXY_CORE"
    echo
    printf '%-11s %-15s %10s %14s %12s %16s  %s\n' peer version "RSS before" "RSS $IDLE idle" "KiB/conn" "RSS after close" notes
    printf '%-11s %-15s %10s %14s %12s %16s\n' '' '' MB MB '' MB
    for name in "${ORDER[@]}"; do
        [[ "$name" == direct ]] && continue
        printf '%-11s %-15s %10s %14s %12s %16s  %s\n' "$name" "$(version_of "$name")" "$(fmt_mb "${R_RSS0[$name]:-}")" \
            "$(fmt_mb "${R_RSS1[$name]:-}")" "${R_PERCONN[$name]:--}" "$(fmt_mb "${R_RSS2[$name]:-}")" "${R_NOTE[$name]:-}"
    done
    echo "(RSS: VmRSS of the proxy's processes (nginx: master and worker). KiB/conn: (RSS with the idle connections"
    echo " - RSS before) / $IDLE. Kernel socket buffers are not in RSS, for any peer.)"
    exit 0
fi

echo
echo "trellis load test: scenario=$SCENARIO${REQUESTS:+ ($(basename "$REQUESTS"), cycled)}"
if [[ "$SCENARIO" == h2c ]]; then
    echo "  h2load -c16 -m10 -D $DURATION (HTTP/2, prior knowledge), after a ${WARMUP} warm-up; proxy: $WORKERS worker(s) on core(s) $PROXY_CORE"
    echo "  (h2load reports no percentiles: the p50 column holds the mean time per request, p99 is empty)"
elif [[ "$SCENARIO" == tls-resume ]]; then
    echo "  openssl s_time -reuse -time $DURATION -www / (one client; req/s: resumed handshakes per second, each with one request); proxy: $WORKERS worker(s) on core(s) $PROXY_CORE"
else
    echo "  wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency, after a ${WARMUP} warm-up; proxy: $WORKERS worker(s) on core(s) $PROXY_CORE"
fi
echo "  backends on core $LOAD_CORE with wrk: ${BACKENDS[*]} (trellis echo, 1 worker each); $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: //')"
echo
row peer version req/s p50 p99 'proxy CPU' 'backend CPU' notes
row '' '' '' ms ms µs/req µs/req ''
row ----------- --------------- -------- ------- ------- ----------- ----------- -----
for name in "${ORDER[@]}"; do
    row "$name" "$(version_of "$name")" "$(fmt_int "${R_RPS[$name]:-}")" "$(fmt_ms "${R_P50[$name]:-}")" \
        "$(fmt_ms "${R_P99[$name]:-}")" "${R_CPU[$name]:--}" "${R_ECHO[$name]:--}" "${R_NOTE[$name]:-}"
done
echo
# ratio_row LABEL A B: A against B on req/s, p99 and CPU per request.
ratio_row() {
    lcell 22 "$1"; rcell 7 "$(ratio "${R_RPS[$2]:-}" "${R_RPS[$3]:-}")"; printf ' '
    rcell 7 "$(ratio "${R_P99[$2]:-}" "${R_P99[$3]:-}")"; printf ' '; rcell 11 "$(ratio "${R_CPU[$2]:-}" "${R_CPU[$3]:-}")"; echo
}
ran() { [[ " ${ORDER[*]} " == *" $1 "* ]]; }
ratios=$(
    ran trellis && ran trellis-log && ratio_row "access log on / off" trellis-log trellis
    ran trellis && ran trellis-auth && ratio_row "auth policy on / off" trellis-auth trellis
    ran nginx && ran nginx-log && ratio_row "nginx log on / off" nginx-log nginx
    for other in nginx haproxy; do
        ran trellis && ran "$other" && ratio_row "trellis / $other" trellis "$other"
    done
    true
)
if [[ -n "$ratios" ]]; then
    lcell 22 ratio; rcell 7 req/s; printf ' '; rcell 7 p99; printf ' '; rcell 11 CPU/request; echo
    echo "$ratios"
fi
echo "(req/s: higher is better; p99 and CPU per request: lower is better. CPU: utime+stime from /proc/PID/stat"
echo " at ${CLK_TCK} ticks/s over the measured run, divided by the requests wrk completed; backend CPU sums the backends.)"
