#!/usr/bin/env bash
# SIP <-> SIP call setup benchmark through the B2BUA: a SIPp UAC (built-in
# `uac` scenario: INVITE with a PCMU offer, ACK, BYE) calls `bob`, the
# dialplan sends `bob` to a SIPp UAS (built-in `uas`) at a SIP URI, and the
# gateway bridges every call: two dialogs, an SDP answer and offer, and an
# anchored media relay (two RTP/RTCP port pairs bound, a relay task started
# and stopped). SIPp sends no media. Prints calls per second, the gateway's
# CPU time per call (user + system from /proc) and calls per CPU-second.
#
# With PDD=1 it also captures the gateway's SIP with tshark and prints the
# post-dial delay the gateway adds: INVITE in -> INVITE out and 200 in ->
# 200 out, p50/p99 (calls paired in arrival order: run it at a low rate,
# 100/s, where calls do not overlap inside the gateway).
#
# Usage: [PDD=1] bench/sip_bridge.sh [RATE] [TOTAL] [HOLD_MS]   (defaults 500 5000 0)
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${1:-500}
TOTAL=${2:-5000}
HOLD=${3:-0}
BIN=target/release/causeway
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
command -v sipp >/dev/null || { echo "sipp missing: cargo xtask deps" >&2; exit 1; }

work=$(mktemp -d)
gw_pid=""
uas_pid=""
cleanup() {
  [ -n "$gw_pid" ] && kill "$gw_pid" 2>/dev/null
  [ -n "$uas_pid" ] && kill "$uas_pid" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

SIP_PORT=25160
HTTP_PORT=28180
UAS_PORT=25164
cat > "$work/plan.toml" <<PLAN
[[rule]]
name = "bench"
priority = 1
match.to = 'bob'
target = { type = "sip", uri = "sip:127.0.0.1:$UAS_PORT" }
PLAN
cat > "$work/causeway.toml" <<CFG
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
[dialplan]
path = "$work/plan.toml"
[media]
port_min = 30000
port_max = 60000
CFG

"$BIN" run --config "$work/causeway.toml" > "$work/gw.log" 2>&1 &
gw_pid=$!
# SIPp's sockets get the same 4 MiB buffers as the gateway's: with Linux's
# default 208 KiB a single-threaded SIPp dropped hundreds of datagrams per
# run at 2,000 calls/s, and the retransmissions that followed loaded the
# gateway with work the benchmark is not about.
BUF=4194304
(cd "$work" && sipp -sn uas -i 127.0.0.1 -p $UAS_PORT -buff_size $BUF -nostdin -bg > "$work/uas.out" 2>&1) || true
uas_pid=$(pgrep -f "sipp -sn uas -i 127.0.0.1 -p $UAS_PORT" | head -1 || true)
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/$HTTP_PORT) 2>/dev/null && break
  sleep 0.1
done

tshark_pid=""
if [ "${PDD:-0}" = 1 ]; then
  tshark -i lo -n -f "udp port $SIP_PORT" -w "$work/sip.pcap" 2> "$work/tshark.err" &
  tshark_pid=$!
  for _ in $(seq 100); do grep -q "Capturing on" "$work/tshark.err" 2>/dev/null && break; sleep 0.1; done
fi

cpu_ticks() { awk '{print $14 + $15}' "/proc/$gw_pid/stat"; }
hz=$(getconf CLK_TCK)
before=$(cpu_ticks)
start=$(date +%s.%N)
set +e
(cd "$work" && sipp -sn uac -s bob -i 127.0.0.1 -p 25162 -mp 26000 -buff_size $BUF \
  -r "$RATE" -m "$TOTAL" -l 2000 -d "$HOLD" -nostdin -timeout 120 -timeout_error \
  -trace_stat -stf "$work/stat.csv" -fd 1 -trace_rtt -rtt_freq 1 \
  127.0.0.1:$SIP_PORT > "$work/sipp.out" 2>&1)
sipp_rc=$?
set -e
end=$(date +%s.%N)
after=$(cpu_ticks)

if [ -n "$tshark_pid" ]; then
  sleep 1
  kill -INT "$tshark_pid"; wait "$tshark_pid" 2>/dev/null || true
  tshark -r "$work/sip.pcap" -n -Y sip -T fields -e frame.time_epoch -e udp.srcport \
    -e udp.dstport -e sip.Method -e sip.Status-Code -e sip.CSeq.method > "$work/sip.tsv"
fi

header=$(head -1 "$work/stat.csv")
col() { echo "$header" | tr ';' '\n' | grep -nx "$1" | cut -d: -f1; }
ok=$(tail -1 "$work/stat.csv" | cut -d';' -f"$(col 'SuccessfulCall(C)')")
failed=$(tail -1 "$work/stat.csv" | cut -d';' -f"$(col 'FailedCall(C)')")
rtt=$(ls "$work"/*rtt.csv 2>/dev/null | head -1 || true)
python3 - "$ok" "$failed" "$before" "$after" "$hz" "$start" "$end" "$RATE" "$sipp_rc" "$rtt" "$work/sip.tsv" "$SIP_PORT" "$UAS_PORT" <<'PY'
import os, sys
ok, failed, before, after, hz, start, end, rate, rc, rtt, tsv, gw, uas = sys.argv[1:]
ok, failed = int(ok), int(failed)
cpu = (int(after) - int(before)) / int(hz)
wall = float(end) - float(start)
print(f"offered rate        {rate}/s, SIPp exit {rc}")
print(f"calls ok            {ok} (failed {failed}) in {wall:.1f} s wall")
print(f"throughput          {ok / wall:.0f} calls/s")
print(f"gateway CPU         {cpu:.2f} s user+system")
if ok:
    print(f"CPU per call        {cpu / ok * 1e6:.0f} us")
    print(f"per core of CPU     {ok / cpu if cpu else float('inf'):.0f} call setups per CPU-second")
if rtt:
    # INVITE -> 200 at the caller, through the gateway and the callee (ms).
    times = []
    for line in open(rtt):
        f = line.strip().split(';')
        try:
            times.append(float(f[1]))
        except (IndexError, ValueError):
            pass
    if times:
        times.sort()
        p = lambda q: times[min(len(times) - 1, int(q * len(times)))]
        print(f"INVITE->200 (SIPp)  p50 {p(0.5):.2f} ms  p99 {p(0.99):.2f} ms  ({len(times)} calls)")
if os.path.exists(tsv):
    gw, uas = int(gw), int(uas)
    inv_in, inv_out, ok_in, ok_out = [], [], [], []
    for line in open(tsv):
        f = line.rstrip("\n").split("\t")
        if len(f) < 6:
            continue
        t, src, dst, method, status, cseq = float(f[0]), int(f[1]), int(f[2]), f[3], f[4], f[5]
        if method == "INVITE" and dst == gw and src != uas:
            inv_in.append(t)
        elif method == "INVITE" and src == gw and dst == uas:
            inv_out.append(t)
        elif status == "200" and cseq == "INVITE" and src == uas and dst == gw:
            ok_in.append(t)
        elif status == "200" and cseq == "INVITE" and src == gw and dst != uas:
            ok_out.append(t)
    def delays(a, b):
        # Retransmissions would break the pairing: pair in order, count only
        # as many as both sides have.
        d = sorted((y - x) * 1000 for x, y in zip(a, b))
        q = lambda p: d[min(len(d) - 1, int(p * len(d)))]
        return f"p50 {q(0.5):.3f} ms  p99 {q(0.99):.3f} ms  max {d[-1]:.3f} ms  ({len(d)} pairs; {len(a)} in, {len(b)} out)"
    if inv_in and inv_out:
        print(f"INVITE in -> out    {delays(inv_in, inv_out)}")
    if ok_in and ok_out:
        print(f"200 in -> out       {delays(ok_in, ok_out)}")
PY
