"""Times one rank's cuDNN attention calls (forward + backward, through ATen's SDPA) of the dense
causal zigzag step with the allgather strategy, as ringattn plans them now (one call per member:
its own keys causal 2c x 2c, every other member's 2c x c or c x 2c) against the same blocks in
fewest calls, as a natural-order gather would allow (own keys causal 2c x 2c, both q chunks x
the r earlier chunks, q chunk 2P-1-r x the chunks between): equal FLOPs, fewer calls, fewer
q rows through cuDNN's per-call dot(dO, O) and dQ conversion. One GPU, [B, S, H, D] storage:

    python3 bench/cudnn_call_merge.py --chunk 16384 --ranks 4
"""
import statistics

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from cudnn_block_shapes import make, shape_arguments, timed


def call(q_rows, kv_rows, causal, heads, dim):
    """A closure that runs one cuDNN forward + backward of this shape, [B, S, H, D] storage."""
    q, k, v = (make(n, heads, dim, "bshd").requires_grad_() for n in (q_rows, kv_rows, kv_rows))
    dout = make(q_rows, heads, dim, "bshd")

    def run():
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        torch.autograd.grad(out, (q, k, v), dout)
    return run


def plans(r, P, c):
    per_member = [(2 * c, 2 * c, True)]
    for m in range(P):
        if m != r:
            per_member.append((2 * c, c, False) if m < r else (c, 2 * c, False))
    fewest = [(2 * c, 2 * c, True)]
    if r > 0:
        fewest.append((2 * c, r * c, False))
    if 2 * P - 2 - 2 * r > 0:
        fewest.append((c, (2 * P - 2 - 2 * r) * c, False))
    return {"per member": per_member, "fewest": fewest}


def main():
    p = shape_arguments(__doc__, reps=6)
    p.add_argument("--ranks", type=int, default=4,
                   help="ranks P of the zigzag step; each rank's calls are timed in turn")
    args = p.parse_args()
    P, c = args.ranks, args.chunk
    print(f"# {torch.cuda.get_device_name()}, P = {P}, chunk = {c}, H = {args.heads}, "
          f"D = {args.head_dim}, bf16, fwd+bwd")
    print("| rank | plan | calls | q rows | ms (alternating, median) |")
    print("|---|---|---|---|---|")
    for r in range(P):
        sets = {name: [call(*s, args.heads, args.head_dim) for s in shapes]
                for name, shapes in plans(r, P, c).items()}
        for fns in sets.values():
            timed(*fns)  # warm-up (plans, workspace)
        times = {name: [] for name in sets}
        for _ in range(args.reps):
            for name, fns in sets.items():
                times[name].append(timed(*fns))
        for name, shapes in plans(r, P, c).items():
            rows = sum(s[0] for s in shapes) // c
            print(f"| {r} | {name} | {len(shapes)} | {rows}c | {statistics.median(times[name]):.2f} |")
        del sets
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
