#!/usr/bin/env bash
# REGISTER benchmark: SIPp drives digest-authenticated registrations (REGISTER,
# 401, REGISTER with credentials, 200) against the release gateway on loopback.
# Prints registrations per second and the gateway's CPU time per 1,000
# registrations, read from /proc (user + system), so the figure stays
# meaningful on a busy 2-core machine.
#
# Usage: bench/register.sh [RATE] [TOTAL] [USERS]   (defaults 2000 20000 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${1:-2000}
TOTAL=${2:-20000}
USERS=${3:-1000}
BIN=target/release/causeway
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
command -v sipp >/dev/null || { echo "sipp missing: cargo xtask deps" >&2; exit 1; }

work=$(mktemp -d)
gw_pid=""
cleanup() { [ -n "$gw_pid" ] && kill "$gw_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

SIP_PORT=25060
HTTP_PORT=28080
{
  cat <<CFG
[sip]
domain = "bench.local"
udp = ["127.0.0.1:$SIP_PORT"]
tcp = []
[storage]
data_dir = "$work/data"
[http]
bind = "127.0.0.1:$HTTP_PORT"
[admin]
token = "bench"
[log]
level = "warn"
[registrar]
max_failures = 1000000
CFG
  for i in $(seq 0 $((USERS - 1))); do
    printf '[[users]]\nname = "u%d"\npassword = "pw%d"\n' "$i" "$i"
  done
} > "$work/causeway.toml"
{
  echo SEQUENTIAL
  for i in $(seq 0 $((USERS - 1))); do
    echo "u$i;bench.local;[authentication username=u$i password=pw$i]"
  done
} > "$work/users.csv"

"$BIN" run --config "$work/causeway.toml" > "$work/gw.log" 2>&1 &
gw_pid=$!
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/$HTTP_PORT) 2>/dev/null && break
  sleep 0.1
done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$gw_pid/stat"; }
hz=$(getconf CLK_TCK)
before=$(cpu_ticks)
start=$(date +%s.%N)
set +e
sipp -sf tests/sipp/register.xml -inf "$work/users.csv" -i 127.0.0.1 -p 25062 \
  -r "$RATE" -m "$TOTAL" -l 2000 -nostdin -timeout 120 -timeout_error \
  -trace_stat -stf "$work/stat.csv" -fd 1 127.0.0.1:$SIP_PORT > "$work/sipp.out" 2>&1
sipp_rc=$?
set -e
end=$(date +%s.%N)
after=$(cpu_ticks)

header=$(head -1 "$work/stat.csv")
# Column positions differ across SIPp versions: look them up by name.
col() { echo "$header" | tr ';' '\n' | grep -nx "$1" | cut -d: -f1; }
ok=$(tail -1 "$work/stat.csv" | cut -d';' -f"$(col 'SuccessfulCall(C)')")
failed=$(tail -1 "$work/stat.csv" | cut -d';' -f"$(col 'FailedCall(C)')")
python3 - "$ok" "$failed" "$before" "$after" "$hz" "$start" "$end" "$RATE" "$sipp_rc" <<'PY'
import sys
ok, failed, before, after, hz, start, end, rate, rc = sys.argv[1:]
ok, failed = int(ok), int(failed)
cpu = (int(after) - int(before)) / int(hz)
wall = float(end) - float(start)
print(f"offered rate        {rate}/s, SIPp exit {rc}")
print(f"registrations ok    {ok} (failed {failed}) in {wall:.1f} s wall")
print(f"throughput          {ok / wall:.0f} registrations/s")
print(f"gateway CPU         {cpu:.2f} s user+system")
if ok:
    print(f"CPU per 1,000 regs  {cpu / ok * 1000 * 1000:.1f} ms")
    print(f"per core of CPU     {ok / cpu if cpu else float('inf'):.0f} registrations per CPU-second")
PY
