#!/usr/bin/env python3
"""Summarise a Kineto Chrome trace (ring_train --profile-step, bench_* --profile): GPU time per
kernel family, the top kernels, how busy the GPU was over the traced span, how much NCCL
time no compute kernel hid, (--gaps) where the GPU sat idle and what the host was doing, and
(--calls REGEX) every call of the matching kernels in time order with its grid.
  python3 bench/summarize_trace.py trace.json [--top 15] [--by-op] [--gaps N] [--calls REGEX]"""
import argparse
import bisect
import json
import re

# First matching family wins; names are matched lower-cased.
FAMILIES = [
    ("nccl", r"nccl"),
    ("attention fwd (cudnn/flash)", r"(cudnn|fmha|flash).*(fprop|fwd|forward)|sdpa.*fwd|fwd.*(fmha|flash)"),
    ("attention bwd (cudnn/flash)", r"(cudnn|fmha|flash).*(dgrad|bprop|bwd|backward)|bwd.*(fmha|flash)|dot_do_o|convert_dq"),
    ("attention other (cudnn/flash)", r"cudnn|fmha|flash"),
    ("ringattn kernels", r"ra::|dilated|gather_|scatter_|merge_|block_sparse|dq_kernel|dkdv|delta_kernel"),
    ("gemm", r"gemm|nvjet|cutlass|xmma|cublas"),
    ("layer/rms norm", r"layer_norm|layernorm|rms_norm"),
    ("softmax / loss", r"softmax|nll_loss|cross_entropy|log_softmax"),
    ("optimizer", r"multi_tensor|adam|foreach"),
    ("reduce", r"reduce"),
    ("copy / cast", r"copy|cat_|catarray|to_copy|index|gather|scatter|memcpy|memset|fill"),
    ("elementwise", r"elementwise|vectorized|unrolled|pointwise"),
]


def family(name):
    low = name.lower()
    for fam, pattern in FAMILIES:
        if re.search(pattern, low):
            return fam
    return "other"


def union_length(intervals):
    total, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if start > end:
            total += stop - start
            end = stop
        elif stop > end:
            total += stop - end
            end = stop
    return total


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("trace", help="Kineto Chrome trace (JSON file)")
    p.add_argument("--top", type=int, default=15,
                   help="how many kernels to list (and launching ops with --by-op)")
    p.add_argument("--by-op", action="store_true",
                   help="also attribute GPU time to the innermost CPU op that launched it")
    p.add_argument("--gaps", type=int, default=0, metavar="N",
                   help="list the N longest idle gaps and total the idle time by the host "
                        "activity it waited on; 0: off")
    p.add_argument("--calls", default="", metavar="REGEX",
                   help="list each call of the kernels whose name matches (case-insensitive): "
                        "start within the span, duration, grid, and what ran beside it; "
                        "empty: off")
    a = p.parse_args()
    with open(a.trace) as f:
        events = json.load(f)["traceEvents"]
    gpu = [e for e in events if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
    if not gpu:
        print(f"{a.trace}: no GPU events")
        return
    span0 = min(e["ts"] for e in gpu)
    span1 = max(e["ts"] + e["dur"] for e in gpu)
    span = span1 - span0
    compute = [(e["ts"], e["ts"] + e["dur"]) for e in gpu if family(e["name"]) != "nccl"]
    busy_all = union_length([(e["ts"], e["ts"] + e["dur"]) for e in gpu])
    busy_compute = union_length(compute)
    by_family, by_kernel = {}, {}
    for e in gpu:
        fam = family(e["name"])
        by_family[fam] = by_family.get(fam, 0.0) + e["dur"]
        key = e["name"][:90]
        n, t = by_kernel.get(key, (0, 0.0))
        by_kernel[key] = (n + 1, t + e["dur"])
    total = sum(by_family.values())
    print(f"trace {a.trace}: GPU span {span / 1e3:.1f} ms, {len(gpu)} GPU events")
    print(f"  busy (any stream) {busy_all / 1e3:.1f} ms = {100 * busy_all / span:.1f}% of span; "
          f"compute busy {busy_compute / 1e3:.1f} ms; idle gaps {(span - busy_all) / 1e3:.1f} ms; "
          f"NCCL not hidden by compute {(busy_all - busy_compute) / 1e3:.1f} ms")
    print(f"  {'family':<32} {'ms':>9} {'% of kernel time':>17}")
    for fam, t in sorted(by_family.items(), key=lambda x: -x[1]):
        print(f"  {fam:<32} {t / 1e3:>9.2f} {100 * t / total:>16.1f}%")
    print(f"  top {a.top} kernels: {'calls':>6} {'ms':>9} {'avg us':>9}  name")
    for name, (n, t) in sorted(by_kernel.items(), key=lambda x: -x[1][1])[: a.top]:
        print(f"  {'':<15}{n:>6} {t / 1e3:>9.2f} {t / n:>9.1f}  {name}")
    if a.by_op:
        by_launching_op(events, gpu, a.top)
    if a.gaps > 0:
        idle_gaps(events, gpu, a.gaps)
    if a.calls:
        list_calls(gpu, a.calls, span0)


def list_calls(gpu, pattern, span0):
    """Each matching kernel: when it ran, how long, its launch grid, and the NCCL time that
    overlapped it (what a concurrent transfer may have taken from it)."""
    nccl = [(e["ts"], e["ts"] + e["dur"]) for e in gpu if family(e["name"]) == "nccl"]
    print(f"  calls of /{pattern}/: {'start ms':>9} {'ms':>8} {'nccl beside':>11}  grid  name")
    for e in sorted(gpu, key=lambda e: e["ts"]):
        if not re.search(pattern, e["name"], re.IGNORECASE):
            continue
        start, stop = e["ts"], e["ts"] + e["dur"]
        beside = sum(max(0.0, min(stop, b) - max(start, a)) for a, b in nccl)
        grid = e.get("args", {}).get("grid", "")
        print(f"  {'':<15}{(start - span0) / 1e3:>9.2f} {e['dur'] / 1e3:>8.2f} "
              f"{beside / 1e3:>11.2f}  {grid}  {e['name'][:60]}")


def by_launching_op(events, gpu, top):
    """GPU time per CPU op that launched it: Kineto's "External id" links a kernel to its op;
    failing that, the innermost cpu_op enclosing the runtime launch (correlation id)."""
    by_external = {}
    for e in events:
        if e.get("cat") == "cpu_op" and "External id" in e.get("args", {}):
            by_external.setdefault(e["args"]["External id"], e)
    launches = {e["args"]["correlation"]: e for e in events
                if e.get("cat") == "cuda_runtime" and "correlation" in e.get("args", {})}
    ops = {}
    for e in events:
        if e.get("cat") == "cpu_op" and e.get("ph") == "X":
            ops.setdefault(e["tid"], []).append(e)
    for lst in ops.values():
        lst.sort(key=lambda e: e["ts"])
    op_starts = {tid: [e["ts"] for e in lst] for tid, lst in ops.items()}
    totals = {}
    for k in gpu:
        args = k.get("args", {})
        name = "(unattributed)"
        if args.get("External id") in by_external:
            op = by_external[args["External id"]]
            name = op["name"]
            shapes = op.get("args", {}).get("Input Dims")
            if shapes:
                name += " " + str(shapes)[:60]
        elif args.get("correlation") in launches:
            launch = launches[args["correlation"]]
            lst, starts = ops.get(launch["tid"], []), op_starts.get(launch["tid"], [])
            # The innermost enclosing op is the latest-starting one that ends after the launch.
            for i in range(bisect.bisect_right(starts, launch["ts"]) - 1, -1, -1):
                if lst[i]["ts"] + lst[i]["dur"] >= launch["ts"] + launch["dur"]:
                    name = lst[i]["name"]
                    break
        totals[name] = totals.get(name, 0.0) + k["dur"]
    print(f"  GPU time by launching op (top {top}):")
    for name, t in sorted(totals.items(), key=lambda x: -x[1])[:top]:
        print(f"  {'':<15}{t / 1e3:>9.2f} ms  {name}")


def host_stack(spans, starts, ts):
    """Names of the host events (cpu_op, cuda_runtime, user annotations) of one thread that
    enclose time ts, outermost first."""
    names = []
    for i in range(bisect.bisect_right(starts, ts) - 1, -1, -1):
        e = spans[i]
        if e["ts"] + e["dur"] >= ts:
            names.append(e["name"])
        if len(names) >= 12:
            break
    return names[::-1]


def idle_gaps(events, gpu, top, min_us=20.0):
    """Idle stretches of the GPU (no kernel, copy or memset on any stream) of at least min_us,
    each named by what the host thread that launched the next kernel was inside when the gap
    began (e.g. aten::item -> cudaStreamSynchronize: a sync drained the queue; an optimizer op:
    launch-bound host code)."""
    intervals = sorted((e["ts"], e["ts"] + e["dur"], e) for e in gpu)
    launches = {e["args"]["correlation"]: e for e in events
                if e.get("cat") == "cuda_runtime" and "correlation" in e.get("args", {})}
    host = {}
    for e in events:
        if e.get("ph") == "X" and e.get("cat") in ("cpu_op", "cuda_runtime", "user_annotation"):
            host.setdefault(e["tid"], []).append(e)
    for lst in host.values():
        lst.sort(key=lambda e: e["ts"])
    host_starts = {tid: [e["ts"] for e in lst] for tid, lst in host.items()}
    gaps, end, prev = [], intervals[0][1], intervals[0][2]
    for start, stop, e in intervals[1:]:
        if start - end >= min_us:
            gaps.append((start - end, end, prev, e))
        if stop > end:
            end, prev = stop, e
    total = sum(g[0] for g in gaps)
    by_cause = {}
    described = []
    for length, begin, before, after in gaps:
        launch = launches.get(after.get("args", {}).get("correlation"))
        stack = []
        if launch is not None:
            tid = launch["tid"]
            stack = host_stack(host.get(tid, []), host_starts.get(tid, []), begin)
        # The innermost op names the cause; a bare runtime call is named with its parent op.
        cause = " > ".join(stack[-2:]) if stack else "(host idle or not traced)"
        n, t = by_cause.get(cause, (0, 0.0))
        by_cause[cause] = (n + 1, t + length)
        described.append((length, begin, before["name"][:50], after["name"][:50], stack))
    print(f"  idle gaps >= {min_us:.0f} us: {len(gaps)}, {total / 1e3:.1f} ms; by host activity "
          f"at the gap's start (top {top}):")
    for cause, (n, t) in sorted(by_cause.items(), key=lambda x: -x[1][1])[:top]:
        print(f"  {'':<4}{t / 1e3:>9.2f} ms {n:>5} gaps  {cause[:110]}")
    print(f"  longest {top} gaps:")
    for length, begin, before, after, stack in sorted(described, key=lambda x: -x[0])[:top]:
        print(f"  {'':<4}{length / 1e3:>8.2f} ms at +{(begin - intervals[0][0]) / 1e3:.1f} ms  "
              f"after {before}  before {after}")
        if stack:
            print(f"  {'':<8}host: {' > '.join(stack[-4:])[:120]}")


if __name__ == "__main__":
    main()
