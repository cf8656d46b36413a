"""Baselines for bench/run_bench.py, measured on the same card in the same run as ringattn.

(a) NaiveDilatedAttention: a straightforward PyTorch implementation of the same math
    (DESIGN.md): per branch and head group, copy the kept rows out with torch indexing, run
    ATen's fused attention with LSE (cuDNN, else flash) on them, scatter into full-size fp32
    per-branch buffers, merge by LSE with torch ops; backward calls each group's fused backward
    with the merged out and lse and index_adds the gradients. Checked against a float64 dense
    masked reference (dense_reference) by check_naive_against_dense().
(b) dense SDPA (cuDNN backend) over the whole sequence, where it fits in time and memory.
"""
import math
import statistics

import torch
import torch.nn.functional as F

CONFIGS = {
    "longnet-base": dict(heads=12, head_dim=64, segments=[2048, 4096, 8192, 16384, 32768],
                         rates=[1, 2, 4, 6, 12]),
    "wide": dict(heads=16, head_dim=128, segments=[4096, 16384, 65536], rates=[1, 4, 16]),
}


def plan_groups(segments, rates, seq_len, heads, partition):
    """(w', r, offset, heads) per branch head group, as DilationPlan builds them."""
    groups = []
    num_branches = len(segments)
    for i, (w, r) in enumerate(zip(segments, rates)):
        w = min(w, seq_len)
        if partition:
            base, extra = divmod(heads, num_branches)
            first = i * base + min(i, extra)
            count = base + (1 if i < extra else 0)
            if count:
                groups.append((i, w, r, i % r, list(range(first, first + count))))
        else:
            for offset in range(min(r, heads)):
                groups.append((i, w, r, offset, list(range(offset, heads, r))))
    return [g for g in groups if g[3] < g[1]]


def dilated_flops(segments, rates, seq_len, heads, head_dim, causal, partition, batch=1):
    """DESIGN.md's forward count (the same as DilationPlan::forward_flops)."""
    flops = 0.0
    for (_, w, r, _, hs) in plan_groups(segments, rates, seq_len, heads, partition):
        flops += 4.0 * batch * len(hs) * head_dim * seq_len * w / (r * r)
    return flops / 2 if causal else flops


def _rows(t, w, r, offset, heads_idx):
    """[B, S, H, D] -> kept rows of one group as a contiguous [B * S / w, h, L, D] copy."""
    B, S, H, D = t.shape
    x = t.view(B, S // w, w, H, D)[:, :, offset::r].index_select(3, heads_idx)
    return x.permute(0, 1, 3, 2, 4).reshape(B * (S // w), len(heads_idx), -1, D)


def _place(full, rows, w, r, offset, heads_idx, add):
    """Writes (or adds) [N, h, L, D] rows back into full [B, S, H, D] (any dtype)."""
    B, S, H, D = full.shape
    view = full.view(B, S // w, w, H, D)[:, :, offset::r]
    x = rows.reshape(B, S // w, len(heads_idx), -1, D).permute(0, 1, 3, 2, 4).to(full.dtype)
    (view.index_add_ if add else view.index_copy_)(3, heads_idx, x)


def _fused_forward(kernel, q, k, v, causal, scale):
    if kernel == "cudnn":
        r = torch.ops.aten._scaled_dot_product_cudnn_attention(
            q, k, v, None, True, 0.0, causal, False, scale=scale)
    else:
        r = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, causal, False,
                                                               scale=scale)
    return r[0], r[1], r[6], r[7]


def _fused_backward(kernel, dout, q, k, v, out, lse, seed, offset, causal, scale):
    L = q.shape[2]
    if kernel == "cudnn":
        return torch.ops.aten._scaled_dot_product_cudnn_attention_backward(
            dout, q, k, v, out, lse, seed, offset, None, None, None, L, L, 0.0, causal,
            scale=scale)
    return torch.ops.aten._scaled_dot_product_flash_attention_backward(
        dout, q, k, v, out, lse, None, None, L, L, 0.0, causal, seed, offset, scale=scale)


class _NaiveFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, segments, rates, causal, partition, kernel):
        B, S, H, D = q.shape
        scale = 1.0 / math.sqrt(D)
        groups = plan_groups(segments, rates, S, H, partition)
        outs = [torch.zeros(B, S, H, D, device=q.device, dtype=torch.float32)
                for _ in segments]
        lses = [torch.full((B, S, H), -math.inf, device=q.device) for _ in segments]
        lse_dim, seed, offset_t = 3, None, None
        for (i, w, r, offset, hs) in groups:
            idx = torch.tensor(hs, device=q.device)
            out_g, lse_g, seed, offset_t = _fused_forward(
                kernel, _rows(q, w, r, offset, idx), _rows(k, w, r, offset, idx),
                _rows(v, w, r, offset, idx), causal, scale)
            lse_dim = lse_g.dim()
            lse_g = lse_g.reshape(out_g.shape[:3])
            _place(outs[i], out_g, w, r, offset, idx, add=False)
            _place(lses[i].unsqueeze(-1), lse_g.unsqueeze(-1), w, r, offset, idx, add=False)
        lse = torch.logsumexp(torch.stack(lses), 0)
        lse_safe = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
        out = torch.zeros_like(outs[0])
        for o_i, l_i in zip(outs, lses):
            out += torch.exp(l_i - lse_safe).unsqueeze(-1) * o_i
        out = out.to(q.dtype)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.settings = (segments, rates, causal, partition, kernel, lse_dim, seed, offset_t)
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, dout, _dlse):
        q, k, v, out, lse = ctx.saved_tensors
        segments, rates, causal, partition, kernel, lse_dim, seed, offset_t = ctx.settings
        B, S, H, D = q.shape
        scale = 1.0 / math.sqrt(D)
        dout = dout.contiguous()
        grads = [torch.zeros(B, S, H, D, device=q.device, dtype=torch.float32) for _ in range(3)]
        for (i, w, r, offset, hs) in plan_groups(segments, rates, S, H, partition):
            idx = torch.tensor(hs, device=q.device)
            rows = [_rows(t, w, r, offset, idx) for t in (q, k, v, out, dout)]
            lse_g = _rows(lse.unsqueeze(-1), w, r, offset, idx).squeeze(-1).contiguous()
            if lse_dim == 4:
                lse_g = lse_g.unsqueeze(-1)
            parts = _fused_backward(kernel, rows[4], rows[0], rows[1], rows[2], rows[3], lse_g,
                                    seed, offset_t, causal, scale)
            for acc, part in zip(grads, parts):
                _place(acc, part, w, r, offset, idx, add=True)
        return (grads[0].to(q.dtype), grads[1].to(q.dtype), grads[2].to(q.dtype),
                None, None, None, None, None)


def naive_dilated_attention(q, k, v, segments, rates, causal=False, partition=False,
                            kernel="cudnn"):
    """q, k, v: [B, S, H, D] CUDA bf16/fp16. Returns (out [B, S, H, D], lse [B, S, H])."""
    out, lse = _NaiveFunction.apply(q, k, v, segments, rates, causal, partition, kernel)
    if partition:
        out = out / len(segments)
    return out, lse


def dense_reference(q, k, v, segments, rates, causal, partition):
    """float64 dense masked form (DESIGN.md): softmax(q k^T * scale + log C) v."""
    B, S, H, D = q.shape
    qd, kd, vd = (t.double() for t in (q, k, v))
    pos = torch.arange(S, device=q.device)
    counts = torch.zeros(H, S, S, dtype=torch.float64, device=q.device)
    for (i, w, r, offset, hs) in plan_groups(segments, rates, S, H, partition):
        local = pos % w
        kept = (local >= offset) & ((local - offset) % r == 0)
        seg = pos // w
        pair = kept[:, None] & kept[None, :] & (seg[:, None] == seg[None, :])
        if causal:
            pair = pair & (pos[None, :] <= pos[:, None])
        counts[hs] += pair.double()
    scores = torch.einsum("bshd,bthd->bhst", qd, kd) / math.sqrt(D)
    logits = torch.where(counts > 0, scores + torch.log(counts.clamp_min(1)), -math.inf)
    has_key = (counts > 0).any(-1, keepdim=True)
    logits = torch.where(has_key, logits, torch.zeros_like(logits))
    out = torch.einsum("bhst,bthd->bshd", torch.softmax(logits, -1) * has_key, vd)
    return out / len(segments) if partition else out


def check_naive_against_dense(device="cuda"):
    """Relative errors of the naive baseline vs the float64 dense form (bf16 inputs)."""
    errors = {}
    for causal in (False, True):
        for partition in (False, True):
            segments, rates = [128, 256, 512], [1, 2, 4]
            q, k, v = (torch.randn(1, 512, 5, 64, device=device, dtype=torch.bfloat16,
                                   requires_grad=True) for _ in range(3))
            dout = torch.randn_like(q)
            out, _ = naive_dilated_attention(q, k, v, segments, rates, causal, partition)
            g = torch.autograd.grad(out, (q, k, v), dout)
            q2, k2, v2 = (t.detach().double().requires_grad_() for t in (q, k, v))
            ref = dense_reference(q2, k2, v2, segments, rates, causal, partition)
            g2 = torch.autograd.grad(ref, (q2, k2, v2), dout.double())
            rel = lambda a, b: ((a.double() - b).norm() / b.norm()).item()
            errors[(causal, partition)] = max([rel(out, ref)] + [rel(a, b) for a, b in zip(g, g2)])
    return errors


def time_cuda(step, warmup, reps):
    """Median ms over reps (CUDA events) and peak GiB of one step (inputs included)."""
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(reps):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times), torch.cuda.max_memory_allocated() / 2**30


def bench_naive(config, seq_len, causal, partition, backward, warmup, reps):
    c = CONFIGS[config]
    q, k, v = (torch.randn(1, seq_len, c["heads"], c["head_dim"], device="cuda",
                           dtype=torch.bfloat16, requires_grad=backward) for _ in range(3))
    dout = torch.randn_like(q)

    def step():
        if backward:
            out, _ = naive_dilated_attention(q, k, v, c["segments"], c["rates"], causal,
                                             partition)
            torch.autograd.grad(out, (q, k, v), dout)
        else:
            with torch.no_grad():
                naive_dilated_attention(q, k, v, c["segments"], c["rates"], causal, partition)

    ms, peak = time_cuda(step, warmup, reps)
    flops = dilated_flops(c["segments"], c["rates"], seq_len, c["heads"], c["head_dim"], causal,
                          partition) * (3.5 if backward else 1.0)
    return ms, flops / (ms * 1e-3) / 1e12, peak


def bench_dense(config, seq_len, causal, backward, warmup, reps):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    c = CONFIGS[config]
    q, k, v = (torch.randn(1, c["heads"], seq_len, c["head_dim"], device="cuda",
                           dtype=torch.bfloat16, requires_grad=backward) for _ in range(3))
    dout = torch.randn_like(q)

    def step():
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            if backward:
                out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
                torch.autograd.grad(out, (q, k, v), dout)
            else:
                with torch.no_grad():
                    F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    ms, peak = time_cuda(step, warmup, reps)
    flops = 4.0 * c["heads"] * c["head_dim"] * seq_len * seq_len * (0.5 if causal else 1.0)
    flops *= 3.5 if backward else 1.0
    return ms, flops / (ms * 1e-3) / 1e12, peak


def bench_kernels_only(config, seq_len, causal, partition, backward, warmup, reps):
    """Profile aid, not an implementation: only the fused attention calls ringattn makes (same
    strided views, cuDNN), with no merge, gather or scatter: a floor for ringattn's time."""
    c = CONFIGS[config]
    H, D = c["heads"], c["head_dim"]
    q, k, v = (torch.randn(1, seq_len, H, D, device="cuda", dtype=torch.bfloat16)
               for _ in range(3))
    scale = 1.0 / math.sqrt(D)
    views = []
    for (_, w, r, offset, hs) in plan_groups(c["segments"], c["rates"], seq_len, H, partition):
        step = hs[1] - hs[0] if len(hs) > 1 else 1
        rows = lambda t: t.view(-1, w, H, D)[:, offset::r, hs[0]:hs[-1] + 1:step].transpose(1, 2)
        views.append((rows(q), rows(k), rows(v)))
    saved = [_fused_forward("cudnn", *qkv, causal, scale) for qkv in views]
    douts = [torch.randn_like(s[0]) for s in saved]

    def step():
        for qkv, s, dout in zip(views, saved, douts):
            if backward:
                _fused_backward("cudnn", dout, *qkv, s[0], s[1], s[2], s[3], causal, scale)
            _fused_forward("cudnn", *qkv, causal, scale)

    ms, peak = time_cuda(step, warmup, reps)
    flops = dilated_flops(c["segments"], c["rates"], seq_len, H, D, causal, partition) * (
        3.5 if backward else 1.0)
    return ms, flops / (ms * 1e-3) / 1e12, peak
