"""Summarises a gateway benchmark run (bench/gateway.sh) as a table.

Added latency at concurrency 1 is the gateway's percentile minus the direct-to-mock percentile
of the same run; the rate is the highest with p99 under 10 ms over the concurrency sweep.
"""

import json
import sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]


def pick(gw, stream):
    return [r for r in rows if r["gateway"] == gw and r["stream"] == stream]


print(f"results: {sys.argv[1]}")
print()
print("| gateway | mode | added p50 µs (c=1) | added p99 µs (c=1) | max req/s with p99 < 10 ms | at concurrency | peak req/s (any p99) |")
print("|---|---|---|---|---|---|---|")
best = {}
peak = {}
for gw in ["switchyard", "vllm-router", "sglang-router", "litellm"]:
    for stream in [False, True]:
        base = [r for r in pick("direct", stream) if r["concurrency"] == 1]
        mine = pick(gw, stream)
        one = [r for r in mine if r["concurrency"] == 1]
        if not base or not one:
            continue
        ok = [r for r in mine if r["p99_ms"] < 10 and r["errors"] == 0]
        top = max(ok, key=lambda r: r["rate"]) if ok else None
        best[(gw, stream)] = top["rate"] if top else 0.0
        peak[(gw, stream)] = max(r["rate"] for r in mine if r["errors"] == 0) if mine else 0.0
        print(
            f"| {gw} | {'stream' if stream else 'plain'} "
            f"| {(one[0]['p50_ms'] - base[0]['p50_ms']) * 1000:.0f} "
            f"| {(one[0]['p99_ms'] - base[0]['p99_ms']) * 1000:.0f} "
            f"| {top['rate'] if top else 0:.0f} | {top['concurrency'] if top else '-'} "
            f"| {peak[(gw, stream)]:.0f} |"
        )
print()
for stream in [False, True]:
    mode = "stream" if stream else "plain"
    for other in ["litellm", "vllm-router", "sglang-router"]:
        s, o = best.get(("switchyard", stream), 0), best.get((other, stream), 0)
        under = f"{s / o:.1f}x" if o else f"{other} never had p99 under 10 ms"
        sp, op = peak.get(("switchyard", stream), 0), peak.get((other, stream), 0)
        ratio = f"{sp / op:.1f}x" if op else "n/a"
        print(f"{mode}: switchyard / {other}: rate with p99 < 10 ms {under}; peak rate {ratio}")
