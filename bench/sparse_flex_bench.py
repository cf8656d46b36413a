#!/usr/bin/env python3
"""FlexAttention (torch.nn.attention.flex_attention, compiled) with the same local_window block
masks as bench/sparse_attention_bench.cpp: key block j is active for query block i when
|i - j| * block_size < window, window = w * block_size, w = max(1, (density% * nb / 100 + 1) // 2).
Prints ms and effective TFLOP/s (active blocks only) and writes JSON."""
import argparse
import json

import torch
from torch.nn.attention.flex_attention import create_block_mask, flex_attention


def tokens(text):
    text = text.upper()
    scale = {"K": 1024, "M": 1024 ** 2}.get(text[-1], 1)
    return int(text[:-1] if scale > 1 else text) * scale


def time_ms(fn, warmup, iters):
    for _ in range(warmup):
        fn()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    stop.record()
    torch.cuda.synchronize()
    return start.elapsed_time(stop) / iters


def main():
    p = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--seq-len", default="64K",
                   help="sequence length S in tokens; K/M suffixes allowed")
    p.add_argument("--densities", default="25,10,2",
                   help="comma list of target block densities in percent (integers)")
    p.add_argument("--heads", type=int, default=16, help="attention heads H")
    p.add_argument("--head-dim", type=int, default=128, help="head dimension D")
    p.add_argument("--block-size", type=int, default=128,
                   help="mask block size in tokens (query and key blocks)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls before each timing")
    p.add_argument("--iters", type=int, default=10, help="timed calls (mean reported)")
    p.add_argument("--json", default="sparse_flex_bench.json", help="write the results here")
    a = p.parse_args()
    S, H, D, b = tokens(a.seq_len), a.heads, a.head_dim, a.block_size
    nb = S // b
    q, k, v = (torch.randn(1, H, S, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
               for _ in range(3))
    grad = torch.randn_like(q)
    flex = torch.compile(flex_attention)
    make_mask = torch.compile(create_block_mask)
    runs = []
    print(f"S={S} H={H} D={D} b={b} bf16 FlexAttention (compiled)")
    print(f"{'target%':>9} {'density%':>9} {'fwd ms':>9} {'TFLOP/s':>8} {'fwd+bwd ms':>11} {'TFLOP/s':>8}")
    for target in (int(x) for x in a.densities.split(",")):
        w = max(1, (target * nb // 100 + 1) // 2)

        def mask_mod(batch, head, qi, kj):
            return (qi // b - kj // b).abs() < w

        # Compiled: the eager builder materialises an [S, S] mask (512 GiB at 256K).
        mask = make_mask(mask_mod, None, None, S, S, device="cuda", BLOCK_SIZE=b)
        active = sum(min(nb, i + w) - max(0, i - w + 1) for i in range(nb))
        flops = 4.0 * H * D * active * b * b
        fwd = time_ms(lambda: flex(q, k, v, block_mask=mask), a.warmup, a.iters)

        def fwdbwd():
            out = flex(q, k, v, block_mask=mask)
            torch.autograd.grad(out, (q, k, v), grad)

        fb = time_ms(fwdbwd, a.warmup, a.iters)
        runs.append({"target_density": target / 100, "density": active / nb ** 2,
                     "fwd_ms": fwd, "fwdbwd_ms": fb, "fwd_tflops": flops / fwd / 1e9})
        print(f"{target:>9} {100 * active / nb ** 2:>9.2f} {fwd:>9.2f} {flops / fwd / 1e9:>8.0f} "
              f"{fb:>11.2f} {3.5 * flops / fb / 1e9:>8.0f}")
    with open(a.json, "w") as f:
        json.dump({"seq_len": S, "heads": H, "head_dim": D, "block_size": b, "runs": runs}, f)


if __name__ == "__main__":
    main()
