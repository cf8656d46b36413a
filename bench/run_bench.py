"""Runs the issue-3 benchmark on one GPU in one go and prints the table last.

1. checks the naive PyTorch baseline against the float64 dense form at a small size;
2. runs bench_dilated_attention (ringattn, C++) as a subprocess first, before this process
   takes GPU memory;
3. times (a) the naive PyTorch baseline and (b) dense cuDNN SDPA here, same card;
4. writes every row to --out (JSON) and prints a markdown table.

Example: python3 bench/run_bench.py --bench-bin build/bench/bench_dilated_attention \
           --seq-lens 64K,1M --causal 0 --passes fwdbwd --out /tmp/bench.json
"""
import argparse
import json
import os
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dilated_baselines as bl  # noqa: E402


def tokens(text):
    units = {"K": 1 << 10, "M": 1 << 20}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


def measure(row, bench):
    """Fills row with bench()'s (ms, TFLOP/s, GiB), or status oom; prints it."""
    try:
        ms, tf, gib = bench()
        row.update(ms=ms, tflops=tf, peak_gib=gib, status="ok")
    except torch.OutOfMemoryError:
        row.update(status="oom")
    torch.cuda.empty_cache()
    print(json.dumps(row), flush=True)
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--bench-bin", required=True,
                   help="path of the built bench_dilated_attention binary")
    p.add_argument("--configs", default="longnet-base,wide",
                   help="comma list of configs (dilated_baselines.CONFIGS)")
    p.add_argument("--seq-lens", default="64K,256K,1M",
                   help="comma list of S in tokens; K/M suffixes allowed")
    p.add_argument("--causal", default="0,1", help="comma list of 0/1")
    p.add_argument("--head-modes", default="all,partition",
                   help="comma list of all (every head uses every branch) and/or partition "
                        "(heads split into one group per branch)")
    p.add_argument("--passes", default="fwd,fwdbwd", help="comma list of fwd/fwdbwd")
    p.add_argument("--naive-seq-lens", default=None,
                   help="subset for the naive baseline; unset: all of --seq-lens")
    p.add_argument("--dense-seq-lens", default="64K",
                   help="S for dense SDPA (b), run whatever --seq-lens holds")
    p.add_argument("--profile-seq-lens", default="1M",
                   help="S where ringattn also runs with --layout gathered and the fused "
                        "kernels are timed alone (fwd+bwd only)")
    p.add_argument("--warmup", type=int, default=2,
                   help="untimed steps first (dense SDPA (b) always does 1)")
    p.add_argument("--reps", type=int, default=5,
                   help="timed steps, median reported (dense SDPA (b) does at most 3)")
    p.add_argument("--out", default="bench.json", help="write every row here (JSON)")
    a = p.parse_args()

    rows = []
    device = torch.cuda.get_device_name(0)
    t0 = time.time()
    errors = bl.check_naive_against_dense()
    worst = max(errors.values())
    print(f"naive baseline vs float64 dense (S=512, bf16): worst rel. error {worst:.2e} "
          f"({'ok' if worst < 1e-2 else 'FAILED'})", flush=True)
    torch.cuda.empty_cache()
    naive_ok = worst < 1e-2

    def bench_cmd(seq_lens, passes, layout):
        return [a.bench_bin, "--configs", a.configs, "--seq-lens", seq_lens, "--causal",
                a.causal, "--head-modes", a.head_modes, "--passes", passes, "--layout", layout,
                "--warmup", str(a.warmup), "--reps", str(a.reps)]
    split = lambda s: [x for x in s.split(",") if x]
    profile_lens = [x for x in split(a.profile_seq_lens) if x in split(a.seq_lens)]
    runs = [bench_cmd(a.seq_lens, a.passes, "auto")]
    if profile_lens and "fwdbwd" in split(a.passes):
        runs.append(bench_cmd(",".join(profile_lens), "fwdbwd", "gathered"))
    for run in runs:
        print("+", " ".join(run), flush=True)
        proc = subprocess.run(run, stdout=subprocess.PIPE, text=True)
        for line in proc.stdout.splitlines():
            if line.startswith("{"):
                rows.append(json.loads(line))
                print(line, flush=True)
        if proc.returncode != 0:
            print(f"bench_dilated_attention exited {proc.returncode}", flush=True)

    naive_lens = split(a.naive_seq_lens or a.seq_lens)
    for config in split(a.configs):
        for s_text in split(a.seq_lens):
            S = tokens(s_text)
            for c in split(a.causal):
                for p_ in split(a.passes):
                    bwd = p_ == "fwdbwd"
                    per_mode = []  # (impl, bench function) run for each head mode
                    if naive_ok and s_text in naive_lens:
                        per_mode.append(("naive", bl.bench_naive))
                    if bwd and s_text in profile_lens:
                        per_mode.append(("kernels_only", bl.bench_kernels_only))
                    for impl, fn in per_mode:
                        for m in split(a.head_modes):
                            row = dict(impl=impl, config=config, S=S, causal=c == "1",
                                       head_mode=m, device=device, **{"pass": p_})
                            rows.append(measure(row, lambda: fn(
                                config, S, c == "1", m == "partition", bwd, a.warmup, a.reps)))

    # (b), the reference of the "TFLOP/s vs (b)" column: at --dense-seq-lens whatever --seq-lens
    # holds (dense attention at 1M would take seconds per step).
    for config in split(a.configs):
        for s_text in split(a.dense_seq_lens):
            S = tokens(s_text)
            for c in split(a.causal):
                for p_ in split(a.passes):
                    row = dict(impl="dense_cudnn", config=config, S=S, causal=c == "1",
                               head_mode="-", device=device, **{"pass": p_})
                    rows.append(measure(row, lambda: bl.bench_dense(
                        config, S, c == "1", p_ == "fwdbwd", 1, max(1, min(a.reps, 3)))))

    with open(a.out, "w") as f:
        json.dump(dict(device=device, torch=torch.__version__, seconds=time.time() - t0,
                       naive_check=str(errors), rows=rows), f, indent=1)
    print_table(rows, device)


def print_table(rows, device):
    def key(r):
        return (r["config"], r["S"], r["causal"], r["pass"])

    dense = {key(r): r for r in rows if r["impl"] == "dense_cudnn"}
    ours = [r for r in rows if r["impl"] == "ringattn" and r.get("layout", "auto") == "auto"]
    naive = {key(r) + (r["head_mode"],): r for r in rows if r["impl"] == "naive"}
    fmt = lambda r, f: ("%.1f" % r[f]) if r and r.get("status") == "ok" else (
        r["status"] if r else "-")
    print(f"\n## {device}: ringattn fused vs (a) naive PyTorch vs (b) dense cuDNN SDPA, bf16, B=1")
    print("| config | S | causal | heads | pass | ms | TFLOP/s | GiB | (a) ms | (a) TFLOP/s | "
          "(a) GiB | speedup vs (a) | (b) ms | (b) TFLOP/s | TFLOP/s vs (b) |")
    print("|" + "---|" * 15)
    for r in ours:
        n = naive.get(key(r) + (r["head_mode"],))
        d = dense.get(key(r)) or next((x for k, x in dense.items()
                                       if k[0] == r["config"] and k[2] == r["causal"]
                                       and k[3] == r["pass"]), None)
        ok = r.get("status") == "ok"
        speed = ("%.2fx" % (n["ms"] / r["ms"])) if ok and n and n.get("status") == "ok" else "-"
        frac = ("%.0f%%" % (100 * r["tflops"] / d["tflops"])) if ok and d and \
            d.get("status") == "ok" else "-"
        print(f"| {r['config']} | {r['S'] // 1024}K | {int(r['causal'])} | {r['head_mode']} | "
              f"{r['pass']} | {fmt(r, 'ms')} | {fmt(r, 'tflops')} | {fmt(r, 'peak_gib')} | "
              f"{fmt(n, 'ms')} | {fmt(n, 'tflops')} | {fmt(n, 'peak_gib')} | {speed} | "
              f"{fmt(d, 'ms')} | {fmt(d, 'tflops')} | {frac} |")
    print("(b) is measured at the S in its own rows; TFLOP/s vs (b) compares with dense SDPA at "
          "the S listed by --dense-seq-lens (same head dim, causal flag and pass).")
    dense_rows = [r for r in rows if r["impl"] == "dense_cudnn"]
    if dense_rows:
        print("\n| (b) dense cuDNN SDPA | S | causal | pass | ms | TFLOP/s | GiB |")
        print("|---|---|---|---|---|---|---|")
        for d in dense_rows:
            print(f"| {d['config']} | {d['S'] // 1024}K | {int(d['causal'])} | {d['pass']} | "
                  f"{fmt(d, 'ms')} | {fmt(d, 'tflops')} | {fmt(d, 'peak_gib')} |")
    extra = {key(r) + (r["head_mode"], r["impl"], r.get("layout", "")): r for r in rows}
    prof = [r for r in ours if (key(r) + (r["head_mode"], "kernels_only", "")) in extra]
    if prof:
        print("\n| profile | S | causal | heads | ringattn ms | fused kernels alone ms | "
              "overhead | gathered layout ms |")
        print("|---|---|---|---|---|---|---|---|")
        for r in prof:
            kern = extra[key(r) + (r["head_mode"], "kernels_only", "")]
            gath = extra.get(key(r) + (r["head_mode"], "ringattn", "gathered"))
            over = ("%.0f%%" % (100 * (r["ms"] - kern["ms"]) / r["ms"])) if r.get(
                "status") == "ok" and kern.get("status") == "ok" else "-"
            print(f"| {r['config']} | {r['S'] // 1024}K | {int(r['causal'])} | {r['head_mode']} "
                  f"| {fmt(r, 'ms')} | {fmt(kern, 'ms')} | {over} | {fmt(gath, 'ms')} |")


if __name__ == "__main__":
    main()
