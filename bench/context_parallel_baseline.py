"""PyTorch context parallelism baseline for the dense causal ring benchmark.

What a user would pick instead of ringattn's ring for dense causal attention: PyTorch's
`context_parallel` (ring attention over SDPA, load-balanced causal sharding), same S, same
heads, same GPUs. Run with one process per GPU:

    torchrun --nproc-per-node 4 bench/context_parallel_baseline.py --seq-len 131072 \
        --heads 16 --head-dim 128 --backend cudnn --json out.json

Prints one line per configuration and writes JSON. fwd+bwd of scaled_dot_product_attention
on the sharded q/k/v is timed with CUDA events (median of --reps after --warmup).
"""
import argparse
import json
import os
import statistics

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor.experimental import context_parallel
from torch.nn.attention import SDPBackend, sdpa_kernel

BACKENDS = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--seq-len", type=int, nargs="+", default=[131072],
                   help="total sequence lengths S in tokens (sharded over the ranks), one run each")
    p.add_argument("--heads", type=int, default=16, help="attention heads H")
    p.add_argument("--head-dim", type=int, default=128, help="head dimension D")
    p.add_argument("--batch", type=int, default=1, help="batch size B")
    p.add_argument("--backend", choices=sorted(BACKENDS), default="cudnn",
                   help="SDPA backend under context_parallel")
    p.add_argument("--warmup", type=int, default=3, help="untimed fwd+bwd steps first")
    p.add_argument("--reps", type=int, default=10,
                   help="timed fwd+bwd steps (median reported, slowest rank)")
    p.add_argument("--json", default="", help="rank 0 writes the JSON rows here; empty: no file")
    p.add_argument("--profile", default="",
                   help="after timing, rank 0 records one more step as a Chrome trace here "
                        "(.json becomes .<S>.json); empty: no trace")
    args = p.parse_args()

    world = int(os.environ["WORLD_SIZE"])
    rank = int(os.environ["RANK"])
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    mesh = init_device_mesh("cuda", (world,))
    results = []
    for S in args.seq_len:
        torch.manual_seed(0)
        shape = (args.batch, args.heads, S, args.head_dim)
        # context_parallel shards the buffers in place, which autograd forbids on leaves that
        # require grad: shard first, then ask for gradients of the local shards.
        q, k, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        dout = torch.randn(shape, device="cuda", dtype=torch.bfloat16)
        times = []
        with sdpa_kernel(BACKENDS[args.backend]):
            with context_parallel(mesh, buffers=[q, k, v, dout], buffer_seq_dims=[2, 2, 2, 2],
                                  no_restore_buffers={q, k, v, dout}):
                for t in (q, k, v):
                    t.requires_grad_()
                for i in range(args.warmup + args.reps):
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    dist.barrier()
                    start.record()
                    out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
                    out.backward(dout)
                    end.record()
                    torch.cuda.synchronize()
                    if i >= args.warmup:
                        times.append(start.elapsed_time(end))
                    q.grad = k.grad = v.grad = None
                if args.profile:
                    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                            torch.profiler.ProfilerActivity.CUDA]) as prof:
                        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
                        out.backward(dout)
                        torch.cuda.synchronize()
                    if rank == 0:
                        prof.export_chrome_trace(args.profile.replace(".json", f".{S}.json"))
                    q.grad = k.grad = v.grad = None
        t = torch.tensor([statistics.median(times)], device="cuda")
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        ms = t.item()
        # DESIGN.md count: 4 B H D S^2 forward, halved for causal; fwd+bwd = 3.5x forward.
        flops = 4.0 * args.batch * args.heads * args.head_dim * S * S / 2 * 3.5
        row = {"impl": f"torch.context_parallel({args.backend})", "gpus": world, "seq_len": S,
               "heads": args.heads, "head_dim": args.head_dim, "fwd_bwd_ms": ms,
               "tflops_per_gpu": flops / world / (ms * 1e-3) / 1e12,
               "tokens_per_s": args.batch * S / (ms * 1e-3),
               "peak_gib": torch.cuda.max_memory_allocated() / 2**30}
        results.append(row)
        if rank == 0:
            print(json.dumps(row), flush=True)
        del q, k, v, dout
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    if rank == 0 and args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
