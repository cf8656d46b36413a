"""Times cuDNN attention's backward (through ATen's SDPA) for the block shapes of one rank of
the dense causal zigzag step, to tell a slower call shape from a slower position in a step.

At 4 ranks and S = 128K a rank holds 2 chunks of 16K rows; its backward block calls are one
causal 32K x 32K call (its own keys) and three unmasked calls of 16K x 32K or 32K x 16K (equal
FLOPs). Each shape is timed alone (back to back) and interleaved with the others, in the
[B, H, S, D] contiguous layout (context_parallel's) and as [B, S, H, D] storage viewed as
[B, H, S, D] (ringattn's). One GPU:

    python3 bench/cudnn_block_shapes.py --chunk 16384 --heads 16 --head-dim 128
"""
import argparse
import statistics

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def make(rows, heads, dim, layout):
    if layout == "bhsd":
        return torch.randn(1, heads, rows, dim, device="cuda", dtype=torch.bfloat16)
    return torch.randn(1, rows, heads, dim, device="cuda", dtype=torch.bfloat16).transpose(1, 2)


def backward_call(q_rows, kv_rows, causal, heads, dim, layout):
    """A closure that runs one cuDNN backward of this shape (the forward is done once here)."""
    q, k, v = (make(n, heads, dim, layout).requires_grad_() for n in (q_rows, kv_rows, kv_rows))
    dout = make(q_rows, heads, dim, layout)
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return lambda: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)


def timed(*fns):
    """Milliseconds of the fns run back to back on the current stream."""
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for fn in fns:
        fn()
    stop.record()
    stop.synchronize()
    return start.elapsed_time(stop)


def shape_arguments(doc, reps):
    """The options both block-call scripts take (this one and cudnn_call_merge.py)."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--chunk", type=int, default=16384, help="rows per zigzag chunk (S / 2P)")
    p.add_argument("--heads", type=int, default=16, help="attention heads H")
    p.add_argument("--head-dim", type=int, default=128, help="head dimension D")
    p.add_argument("--reps", type=int, default=reps,
                   help="timed repetitions per measurement, after one warm-up (median reported)")
    return p


def main():
    args = shape_arguments(__doc__, reps=8).parse_args()
    n = args.chunk
    shapes = {"causal 2n x 2n": (2 * n, 2 * n, True), "n x 2n": (n, 2 * n, False),
              "2n x n": (2 * n, n, False)}
    flops = 4 * args.heads * args.head_dim * (2 * n) ** 2 / 2 * 2.5  # equal for all three
    print(f"# {torch.cuda.get_device_name()}, chunk n = {n}, H = {args.heads}, "
          f"D = {args.head_dim}, bf16, backward only")
    print("| layout | shape | alone ms | interleaved ms | TFLOP/s (alone) |")
    print("|---|---|---|---|---|")
    for layout in ("bhsd", "bshd"):
        calls = {name: backward_call(*s, args.heads, args.head_dim, layout)
                 for name, s in shapes.items()}
        for fn in calls.values():  # warm-up (plans, workspace)
            fn()
        alone = {name: statistics.median(timed(fn) for _ in range(args.reps))
                 for name, fn in calls.items()}
        mixed = {name: [] for name in calls}
        for _ in range(args.reps):
            for name, fn in calls.items():
                mixed[name].append(timed(fn))
        for name in calls:
            print(f"| {layout} | {name} | {alone[name]:.2f} | {statistics.median(mixed[name]):.2f}"
                  f" | {flops / alone[name] / 1e9:.0f} |")
        del calls
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
