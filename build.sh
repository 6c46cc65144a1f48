#!/usr/bin/env bash
# ModularChat's one entry script. Subcommands:
#   run            start PostgreSQL (+ Redis) when needed and run the service
#   test           start what the tests need and run every test
#   bench          run the benchmark program (starts and stops what it needs)
#   token          print a signed development token: token --sub alice [--tenant t] [--role admin [operator]]
#   eval-search    import LoCoMo conversations and print search recall (see README)
#   publish [dir]  a deployable build (default .local/publish): handler code generated ahead of time, ReadyToRun
#   stop           stop the PostgreSQL and Redis that this script started
#   services       start PostgreSQL (+ Redis) only and print their connection strings
#   feed           produce the local NuGet feed only
#
# Everything it creates lives in .local/ (git-ignored).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE="$ROOT/.local"
FEED="$STATE/feed"
PGDATA_DIR="$STATE/postgres"
REDIS_DIR="$STATE/redis"
PG_PORT="${MODULARCHAT_PG_PORT:-54329}"
REDIS_PORT="${MODULARCHAT_REDIS_PORT:-63790}"
HOST_PROJECT="$ROOT/src/Host/ModularChat.Host.csproj"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1

log() { printf '\033[1;34m[build]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[build]\033[0m %s\n' "$*" >&2; exit 1; }
# A server's log that has grown past 10 MiB is kept as <name>.1 (replacing the previous one) before the server starts again.
rotate_log() {
  local file="$1"
  [[ -f "$file" ]] && (( $(stat -c %s "$file") > 10 * 1024 * 1024 )) && mv -f "$file" "$file.1"
  return 0
}

# ---------------------------------------------------------------------------
# Local NuGet feed. Marten -> Weasel -> Patched.DistributedLock.Postgres needs
# Patched.DistributedLock.Core [1.0.11,1.1.0), which the registry mirror does
# not serve. We repack the served original DistributedLock.Core 1.0.9 (MIT,
# same assembly name) under that id. See docs/adr/0001-local-package-feed.md.
# ---------------------------------------------------------------------------
# Debian packages the script needs, installed with apt-get where it can (as root, or with sudo without a password).
ensure_tools() {
  local missing=() tool
  for tool in "$@"; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
  (( ${#missing[@]} == 0 )) && return 0
  if [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null 2>&1; then
    log "installing ${missing[*]} with apt-get"
    apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1; } || true
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null && command -v apt-get >/dev/null 2>&1; then
    log "installing ${missing[*]} with sudo apt-get"
    sudo -n apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 || true
  fi
  for tool in "${missing[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is needed to build the local NuGet feed: install it (Debian/Ubuntu: apt-get install $tool)"
  done
}

ensure_feed() {
  local target="$FEED/patched.distributedlock.core.1.0.11.nupkg"
  [[ -f "$target" ]] && return 0
  ensure_tools curl unzip zip
  log "producing the local NuGet feed in .local/feed"
  mkdir -p "$FEED"
  local work; work="$(mktemp -d)"
  local url="https://api.nuget.org/v3-flatcontainer/distributedlock.core/1.0.9/distributedlock.core.1.0.9.nupkg"
  curl -fsSL --retry 3 -o "$work/original.nupkg" "$url" || die "could not download DistributedLock.Core 1.0.9 from $url"
  mkdir -p "$work/pkg"
  (cd "$work/pkg" && unzip -q ../original.nupkg)
  rm -f "$work/pkg/.signature.p7s"
  mv "$work/pkg/DistributedLock.Core.nuspec" "$work/pkg/Patched.DistributedLock.Core.nuspec"
  sed -i -e 's|<id>DistributedLock.Core</id>|<id>Patched.DistributedLock.Core</id>|' \
         -e 's|<version>1.0.9</version>|<version>1.0.11</version>|' \
         "$work/pkg/Patched.DistributedLock.Core.nuspec"
  grep -q '<id>Patched.DistributedLock.Core</id>' "$work/pkg/Patched.DistributedLock.Core.nuspec" || die "nuspec rewrite failed"
  sed -i -e 's|DistributedLock.Core.nuspec|Patched.DistributedLock.Core.nuspec|g' "$work/pkg/_rels/.rels" 2>/dev/null || true
  (cd "$work/pkg" && zip -qr -X "$work/patched.nupkg" .)
  mv "$work/patched.nupkg" "$target"
  rm -rf "$work"
}

# ---------------------------------------------------------------------------
# PostgreSQL: a project-local cluster from the machine's binaries, unless
# ConnectionStrings__Postgres is set.
# ---------------------------------------------------------------------------
pg_bindir() {
  # The cluster's own major version first: another major version's pg_ctl refuses its data directory (after an upgrade
  # installed a newer PostgreSQL beside it, the cluster would no longer be reused).
  local v; v="$(cat "$PGDATA_DIR/PG_VERSION" 2>/dev/null || true)"
  if [[ -n "$v" && -x "/usr/lib/postgresql/$v/bin/pg_ctl" ]]; then
    echo "/usr/lib/postgresql/$v/bin"; return
  fi
  if command -v pg_config >/dev/null 2>&1 && [[ -x "$(pg_config --bindir)/initdb" ]]; then
    pg_config --bindir; return
  fi
  local d; d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)"
  [[ -n "$d" && -x "$d/initdb" ]] && { echo "$d"; return; }
  # Elsewhere (Fedora, RHEL, Homebrew) the server's tools are on the PATH.
  command -v initdb >/dev/null 2>&1 && { dirname "$(command -v initdb)"; return; }
  die "PostgreSQL server binaries not found (install postgresql, or set ConnectionStrings__Postgres)"
}

# PostgreSQL refuses to run as root: run its tools as the 'postgres' user then.
as_pg() {
  if [[ "$(id -u)" == "0" ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# As root, PostgreSQL runs as 'postgres', which must be able to traverse the path to .local/postgres
# (a clone under a private temporary directory is not). Grant traverse-only permission where missing.
ensure_pg_can_reach_state() {
  [[ "$(id -u)" == "0" ]] || return 0
  runuser -u postgres -- test -x "$STATE" 2>/dev/null && return 0
  local dir="$STATE"
  while [[ "$dir" != "/" ]]; do
    if ! runuser -u postgres -- test -x "$dir" 2>/dev/null; then
      log "granting traverse permission (o+x) on $dir so the postgres user can reach .local/postgres"
      chmod o+x "$dir"
    fi
    dir="$(dirname "$dir")"
  done
}

pg_running() { [[ -f "$PGDATA_DIR/postmaster.pid" ]] && as_pg "$(pg_bindir)/pg_ctl" -D "$PGDATA_DIR" status >/dev/null 2>&1; }

# After the machine (or its container) restarted without a clean stop, postmaster.pid names a process id that may now
# belong to another program: pg_ctl then reports the cluster running, and PostgreSQL refuses to start over the file.
# The file is this cluster's only when its process is a PostgreSQL server working in this data directory.
clear_stale_pid_file() {
  local file="$PGDATA_DIR/postmaster.pid" pid comm cwd
  [[ -f "$file" ]] || return 0
  pid="$(head -n1 "$file" | tr -dc '0-9')"
  # ps works on every Unix (macOS has no /proc) and for processes of other users; the working directory only where /proc
  # tells it (PostgreSQL works in its data directory).
  if [[ -n "$pid" ]] && comm="$(ps -p "$pid" -o comm= 2>/dev/null)"; then
    [[ -d "/proc/$pid" ]] && cwd="$(readlink -f "/proc/$pid/cwd" 2>/dev/null || true)"
    if [[ "$(basename "${comm// /}")" == postgres* && ( -z "$cwd" || "$cwd" == "$(readlink -f "$PGDATA_DIR")" ) ]]; then
      return 0
    fi
  fi
  log "removing .local/postgres/postmaster.pid left by a PostgreSQL that is no longer running (its process ${pid:-?} is ${comm:-gone})"
  rm -f "$file"
}

STARTED_PG=0
LOCAL_PG=0   # 1: the service uses this script's PostgreSQL in .local (started now or before)
ensure_postgres() {
  if [[ -n "${ConnectionStrings__Postgres:-}" ]]; then
    log "using ConnectionStrings__Postgres from the environment"
    return 0
  fi
  LOCAL_PG=1
  local bin; bin="$(pg_bindir)"
  mkdir -p "$STATE"
  ensure_pg_can_reach_state
  if [[ ! -f "$PGDATA_DIR/PG_VERSION" ]]; then
    log "creating a PostgreSQL cluster in .local/postgres"
    mkdir -p "$PGDATA_DIR"
    [[ "$(id -u)" == "0" ]] && chown postgres:postgres "$PGDATA_DIR"
    chmod 700 "$PGDATA_DIR"
    as_pg "$bin/initdb" -D "$PGDATA_DIR" -U modularchat --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    cat >>"$PGDATA_DIR/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = ''
max_connections = 300
shared_buffers = 256MB
fsync = on
synchronous_commit = on
EOF
  fi
  clear_stale_pid_file
  if ! pg_running; then
    log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
    [[ "$(id -u)" == "0" ]] && chown -R postgres:postgres "$PGDATA_DIR"
    rotate_log "$PGDATA_DIR/server.log"
    as_pg "$bin/pg_ctl" -D "$PGDATA_DIR" -l "$PGDATA_DIR/server.log" -w -t 60 start >/dev/null \
      || { tail -n 20 "$PGDATA_DIR/server.log" >&2; die "PostgreSQL did not start"; }
    STARTED_PG=1
  fi
  "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U modularchat -d postgres -tAc "select 1 from pg_database where datname='modularchat'" | grep -q 1 \
    || "$bin/createdb" -h 127.0.0.1 -p "$PG_PORT" -U modularchat modularchat
  # The search index needs btree_gin, one of PostgreSQL's contrib modules (Debian's server package includes them).
  "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U modularchat -d postgres -tAc "select 1 from pg_available_extensions where name='btree_gin'" | grep -q 1 \
    || die "PostgreSQL's btree_gin extension is not installed: install the contrib modules of PostgreSQL $("$bin/pg_ctl" --version | grep -oE '[0-9]+' | head -n1) (e.g. postgresql-contrib)"
  export ConnectionStrings__Postgres="Host=127.0.0.1;Port=$PG_PORT;Database=modularchat;Username=modularchat;Maximum Pool Size=100"
}

stop_postgres() {
  [[ -f "$PGDATA_DIR/PG_VERSION" ]] && clear_stale_pid_file
  if [[ -f "$PGDATA_DIR/PG_VERSION" ]] && pg_running; then
    log "stopping PostgreSQL"
    as_pg "$(pg_bindir)/pg_ctl" -D "$PGDATA_DIR" -m fast -w stop >/dev/null
  fi
}

# ---------------------------------------------------------------------------
# Redis: started when redis-server exists (installed with apt-get where we
# can); without it the service runs on its in-process cache only.
# ---------------------------------------------------------------------------
# Redis removes its pid file as it exits, so the file may vanish between a test and a read: read it once. A file left
# by a Redis that did not exit cleanly (a container restart, a reboot) can name a process that is something else now:
# only a live redis-server counts (by /proc where there is one), and a stale file is removed, so that Redis is started
# again and `stop` never signals another process.
redis_pid() {
  local pid; pid="$(cat "$REDIS_DIR/redis.pid" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null \
    && { [[ ! -r "/proc/$pid/comm" ]] || [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == redis-server* ]]; } \
    && { echo "$pid"; return 0; }
  rm -f "$REDIS_DIR/redis.pid"
  return 1
}
redis_running() { redis_pid >/dev/null; }

STARTED_REDIS=0
LOCAL_REDIS=0   # 1: the service uses this script's Redis in .local
ensure_redis() {
  if [[ -n "${ConnectionStrings__Redis+set}" ]]; then
    log "using ConnectionStrings__Redis from the environment${ConnectionStrings__Redis:+}"
    return 0
  fi
  if ! command -v redis-server >/dev/null 2>&1; then
    if [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null 2>&1; then
      log "installing redis-server with apt-get"
      (apt-get install -y -qq redis-server >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq redis-server >/dev/null 2>&1; }) \
        || log "could not install redis-server"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null && command -v apt-get >/dev/null 2>&1; then
      log "installing redis-server with sudo apt-get"
      sudo -n apt-get install -y -qq redis-server >/dev/null 2>&1 || log "could not install redis-server"
    fi
  fi
  if ! command -v redis-server >/dev/null 2>&1; then
    log "redis-server is not available: the service will run on its in-process cache only"
    export ConnectionStrings__Redis=""
    return 0
  fi
  mkdir -p "$REDIS_DIR"
  if ! redis_running; then
    log "starting Redis on 127.0.0.1:$REDIS_PORT"
    rotate_log "$REDIS_DIR/redis.log"
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes --dir "$REDIS_DIR" \
      --pidfile "$REDIS_DIR/redis.pid" --logfile "$REDIS_DIR/redis.log" --save "" --appendonly no >/dev/null
    for _ in $(seq 1 50); do redis_running && break; sleep 0.1; done
    redis_running || die "Redis did not start (see .local/redis/redis.log)"
    STARTED_REDIS=1
  fi
  LOCAL_REDIS=1
  export ConnectionStrings__Redis="127.0.0.1:$REDIS_PORT"
}

stop_redis() {
  local pid
  if pid="$(redis_pid)"; then
    log "stopping Redis"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do redis_running || break; sleep 0.1; done
    rm -f "$REDIS_DIR/redis.pid"
  fi
}

# Stop only what this invocation started (used by test and bench).
stop_started() {
  [[ "$STARTED_PG" == "1" ]] && stop_postgres
  [[ "$STARTED_REDIS" == "1" ]] && stop_redis
  return 0
}

# The tests' hosts write their warnings and errors to one file per test assembly in $MODULARCHAT_TEST_LOGS
# (tests/ModularChat.Testing/TestLogs.cs), as the test console shows none of them. Print the entries that are bugs
# whether or not a test noticed (the first 10, 60 lines each): each unhandled exception answered a request with a 500,
# and Wolverine only warns when it drops a message a handler enqueued after its transaction had committed. A test that
# makes a request fail on purpose says "(staged by a test)" in its exception's message.
report_unhandled() {
  local found
  found="$(awk '
    function flush() {
      if (entry ~ /Unhandled exception for|will not be sent/ && entry !~ /\(staged by a test\)/ && ++n <= 10) printf "--- %s\n%s", file, entry
      entry = ""; lines = 0
    }
    FNR == 1 { flush(); file = FILENAME }
    /^[0-9][0-9]:[0-9][0-9]:[0-9][0-9]\.[0-9][0-9][0-9] / { flush() }
    { if (++lines <= 60) entry = entry $0 "\n" }
    END { flush(); if (n > 10) printf "... and %d more\n", n - 10 }
  ' "$MODULARCHAT_TEST_LOGS"/*.log "$MODULARCHAT_TEST_LOGS"/*/*.log 2>/dev/null || true)"
  [[ -z "$found" ]] && return 0
  log "the service answered 500 (an unhandled exception) or dropped a message during the tests; from the hosts' logs in $MODULARCHAT_TEST_LOGS:"
  printf '%s\n' "$found" >&2
}

# The test projects in two lanes at once: Conversations, the longest (~10 min), in one, the others one after another in
# the other. dotnet test's own scheduling (one project per core) ran them two at a time as well, but left Conversations
# for last, alone: ~24 min on two cores. All five at once (-m:8, 0ca0875) took ~15 min and passed on this machine, but
# failed 4 tests on CI's two cores (5d59c19): with every project's collections running too, work the tests wait for took
# longer than they waited. The others together take longer than Conversations (~12.5 against ~9.5 min, measured
# 2026-12-07: Providers ~5, Search ~4, Summaries ~3.5), so without a --filter of the caller's the Summaries tests are split
# in two: the classes of first_summaries (~2.5 min) run after Conversations, the rest in the other lane (~12 min each;
# two fresh-clone runs on 2026-12-07 still ended lane 2 ~1.3 min after lane 1, so DeletionTests, ~40 s, moved over).
# The two Summaries runs overlap, so the first has databases and a log folder of its own (see test_lane). Each lane's
# output goes to the console as it comes and to a file of its own; .local/test-output.log gets both. Arguments (e.g. --filter) go to every run.
run_tests() {
  local tests="$ROOT/tests" first=() rest=() project status=0 split=1 argument
  local conversations="$tests/ModularChat.Conversations.Tests/ModularChat.Conversations.Tests.csproj"
  local summaries="$tests/ModularChat.Summaries.Tests/ModularChat.Summaries.Tests.csproj"
  local first_summaries=(LlmSummarizerTests TenantShareTests BurstTests DeletionTests) class chosen="" others=""
  for class in "${first_summaries[@]}"; do
    chosen+="${chosen:+|}FullyQualifiedName~.$class." others+="${others:+&}FullyQualifiedName!~.$class."
  done
  for argument in "$@"; do
    [[ "$argument" == --filter* ]] && split=0
  done
  first=("$conversations")
  for project in "$tests"/*.Tests/*.Tests.csproj; do
    if [[ "$project" == "$conversations" ]]; then
      continue
    elif [[ "$project" == "$summaries" && "$split" == 1 ]]; then
      first+=("$project::$chosen::summaries1")
      rest+=("$project::$others")
    else
      rest+=("$project")
    fi
  done
  dotnet build "$ROOT/ModularChat.sln" -c Release -nologo -v q || return
  # dotnet test gives a test host 90 s to start and answer; with both lanes busy on two cores (and anything else the
  # machine runs) a host started late once took longer, and the whole project's run was aborted without a test run.
  export VSTEST_CONNECTION_TIMEOUT="${VSTEST_CONNECTION_TIMEOUT:-600}"
  test_lane "$STATE/test-output-1.log" "${first[@]}" -- "$@" &
  local one=$!
  test_lane "$STATE/test-output-2.log" "${rest[@]}" -- "$@" &
  local two=$!
  wait "$one" || status=1
  wait "$two" || status=1
  cat "$STATE/test-output-1.log" "$STATE/test-output-2.log" >"$STATE/test-output.log"
  rm -f "$STATE/test-output-1.log" "$STATE/test-output-2.log"
  return "$status"
}

# test_lane LOG RUN... -- ARGUMENTS...: the runs one after another; fails when any of them failed. A run is a test
# project, or PROJECT::FILTER (its tests that FILTER selects), or PROJECT::FILTER::PART: a run that may overlap another
# run of the same project, so its databases are named with PART too (MODULARCHAT_TEST_DB_PREFIX) and its hosts' logs go
# to the folder PART inside MODULARCHAT_TEST_LOGS.
test_lane() {
  local log="$1" runs=() status=0 run project selection part filter environment
  shift
  while [[ $# -gt 0 && "$1" != "--" ]]; do runs+=("$1"); shift; done
  shift
  : >"$log"
  for run in "${runs[@]}"; do
    project="${run%%::*}" filter=() environment=()
    if [[ "$run" == *::* ]]; then
      selection="${run#*::}"
      if [[ "$selection" == *::* ]]; then
        part="${selection#*::}" selection="${selection%%::*}"
        environment=("MODULARCHAT_TEST_DB_PREFIX=${MODULARCHAT_TEST_DB_PREFIX:-mc_}${part}_")
        if [[ -n "${MODULARCHAT_TEST_LOGS:-}" ]]; then
          mkdir -p "$MODULARCHAT_TEST_LOGS/$part"
          environment+=("MODULARCHAT_TEST_LOGS=$MODULARCHAT_TEST_LOGS/$part")
        fi
      fi
      filter=(--filter "$selection")
    fi
    env "${environment[@]}" dotnet test "$project" -c Release --no-build "${filter[@]}" "$@" 2>&1 | tee -a "$log" || status=1
  done
  return "$status"
}

# The last lines of a test run: the failed tests (each "Failed <name> [<time>]" line dotnet test printed), then each
# project's result line.
report_results() {
  local failed
  failed="$(grep -E '^\s+Failed [A-Za-z_.]+' "$1" | sed -E 's/^\s+//' || true)"
  if [[ -n "$failed" ]]; then
    log "failed tests (their errors are above, and in .local/test-output.log):"
    printf '%s\n' "$failed" >&2
  fi
  grep -E '^(Passed|Failed)!' "$1" >&2 || true
}

# A development signing key, generated once per clone and never committed.
ensure_dev_key() {
  mkdir -p "$STATE"
  if [[ -z "${Auth__SigningKey:-}" ]]; then
    [[ -f "$STATE/dev-signing-key" ]] || head -c 48 /dev/urandom | base64 -w0 >"$STATE/dev-signing-key"
    export Auth__SigningKey="$(cat "$STATE/dev-signing-key")"
  fi
  if [[ -z "${DataProtection__MasterKey:-}" ]]; then
    [[ -f "$STATE/dev-master-key" ]] || head -c 32 /dev/urandom | base64 -w0 >"$STATE/dev-master-key"
    export DataProtection__MasterKey="$(cat "$STATE/dev-master-key")"
  fi
}

# ---------------------------------------------------------------------------
# Handler code generated ahead of time. `publish` writes it (codegen write) into src/Host/Internal/Generated,
# compiles it into the published Host and removes it again; see docs/adr/0007-handler-code-generated-ahead-of-time.md.
# A copy left in the tree would be compiled into every later build and used instead of the current handlers.
# ---------------------------------------------------------------------------
GENERATED="$ROOT/src/Host/Internal/Generated"

remove_generated() {
  rm -rf "$GENERATED"
  rmdir "$ROOT/src/Host/Internal" 2>/dev/null || true
}

discard_generated() {
  if [[ -d "$GENERATED" ]]; then
    log "removing handler code left over from an interrupted publish (src/Host/Internal/Generated)"
    remove_generated
  fi
  return 0
}

publish_host() {
  local out="$1" rid
  rid="$(dotnet --info | awk '$1 == "RID:" { print $2; exit }')"
  [[ -n "$rid" ]] || die "could not read the runtime identifier from dotnet --info"
  discard_generated
  trap discard_generated EXIT
  log "building the Host"
  dotnet build "$HOST_PROJECT" -c Release -v q -nologo
  log "generating the Wolverine handler code ahead of time"
  (cd "$ROOT/src/Host" && dotnet "bin/Release/net10.0/ModularChat.Host.dll" codegen write >/dev/null)
  [[ -f "$GENERATED/WolverineHandlers/GeneratedHandlerRegistry.cs" ]] || die "codegen write wrote no handler code"
  log "publishing to $out ($rid, ReadyToRun)"
  # A runtime-specific build: its own bin/obj folders, so the plain build output never holds the generated handlers.
  dotnet publish "$HOST_PROJECT" -c Release -r "$rid" --self-contained false -p:PublishReadyToRun=true -o "$out" -v q -nologo
  remove_generated
  # The Host loads the generated handlers only when it finds them (else it compiles at run time): check they are in.
  grep -q "Internal.Generated.WolverineHandlers" "$out/ModularChat.Host.dll" || die "the published Host does not contain the generated handler code"
  log "published: dotnet $out/ModularChat.Host.dll (configuration: README, section Configuration)"
}

cmd="${1:-help}"; shift || true
case "$cmd" in
  run|test|bench|eval-search|token) discard_generated ;;
esac
case "$cmd" in
  feed)
    ensure_feed ;;
  services)
    ensure_feed; ensure_postgres; ensure_redis
    echo "ConnectionStrings__Postgres=$ConnectionStrings__Postgres"
    echo "ConnectionStrings__Redis=${ConnectionStrings__Redis:-}" ;;
  run)
    ensure_feed; ensure_postgres; ensure_redis; ensure_dev_key
    export ASPNETCORE_ENVIRONMENT="${ASPNETCORE_ENVIRONMENT:-Development}"
    export ASPNETCORE_URLS="${ASPNETCORE_URLS:-http://localhost:5080}"
    local_servers=""
    [[ "$LOCAL_PG" == "1" ]] && local_servers="PostgreSQL"
    [[ "$LOCAL_REDIS" == "1" ]] && local_servers="${local_servers:+$local_servers and }Redis"
    if [[ $# -eq 0 ]]; then
      log "ModularChat on $ASPNETCORE_URLS (API page: /scalar, OpenAPI: /openapi/v1.json)${local_servers:+; ./build.sh stop stops its $local_servers in .local}"
    else
      log "ModularChat command: $*${local_servers:+ (./build.sh stop stops its $local_servers in .local)}"
    fi
    exec dotnet run --no-launch-profile --project "$HOST_PROJECT" -c Release -- "$@" ;;
  token)
    ensure_feed; ensure_dev_key
    export ASPNETCORE_ENVIRONMENT="${ASPNETCORE_ENVIRONMENT:-Development}"
    dotnet build "$HOST_PROJECT" -c Release -v q -nologo >/dev/null
    dotnet run --no-launch-profile --no-build --project "$HOST_PROJECT" -c Release -- token "$@" ;;
  test)
    # Set first: what this run started is stopped also when a later step fails.
    trap stop_started EXIT
    ensure_feed; ensure_postgres; ensure_redis
    export MODULARCHAT_TEST_LOGS="${MODULARCHAT_TEST_LOGS:-$STATE/test-logs}"
    mkdir -p "$MODULARCHAT_TEST_LOGS" && rm -f "$MODULARCHAT_TEST_LOGS"/*.log "$MODULARCHAT_TEST_LOGS"/*/*.log
    status=0
    run_tests "$@" || status=$?
    report_unhandled
    report_results "$STATE/test-output.log"
    exit "$status" ;;
  bench|eval-search)
    trap stop_started EXIT
    ensure_feed; ensure_postgres; ensure_redis; ensure_dev_key
    dotnet build "$ROOT/ModularChat.sln" -c Release -v q -nologo >/dev/null
    [[ "$cmd" == "eval-search" ]] && set -- eval-search "$@"
    dotnet "$ROOT/tests/ModularChat.Benchmarks/bin/Release/net10.0/ModularChat.Benchmarks.dll" "$@" ;;
  publish)
    ensure_feed
    publish_host "$(mkdir -p "${1:-$STATE/publish}" && cd "${1:-$STATE/publish}" && pwd)" ;;
  stop)
    # Redis too when stopping PostgreSQL fails.
    status=0
    stop_postgres || status=$?
    stop_redis
    exit "$status" ;;
  help|-h|--help)
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' ;;
  *)
    die "unknown command '$cmd' (try ./build.sh help)" ;;
esac
