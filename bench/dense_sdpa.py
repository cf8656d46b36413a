"""Times dense cuDNN SDPA (forward+backward or forward) with a config's heads and head dim at S
tokens and prints one JSON row per (config, S): issue 3's "60% of dense" reference, for A/B
scripts that time it beside ringattn's rows on the same card (tests/gpu/ab_dilated.sh
DENSE_SEQS). The timing is dilated_baselines.bench_dense's, as run_bench.py's (b) column.

Example: python3 bench/dense_sdpa.py --configs longnet-base --seq-lens 64K --causal 1
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dilated_baselines as bl  # noqa: E402
from run_bench import tokens  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--configs", default="longnet-base", help="comma list")
    p.add_argument("--seq-lens", default="64K", help="comma list, K/M suffixes")
    p.add_argument("--causal", default="1", help="comma list of 0/1")
    p.add_argument("--passes", choices=("fwd", "fwdbwd"), default="fwdbwd",
                   help="fwd: forward only; fwdbwd: forward+backward")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--reps", type=int, default=5, help="timed steps (median reported)")
    a = p.parse_args()
    for config in a.configs.split(","):
        if config not in bl.CONFIGS:
            p.error(f"--configs: '{config}' is not one of {', '.join(bl.CONFIGS)}")
        for text in a.seq_lens.split(","):
            for causal in a.causal.split(","):
                if causal not in ("0", "1"):
                    p.error(f"--causal: '{causal}' is not 0 or 1")
                seq_len = tokens(text)
                ms, tflops, peak = bl.bench_dense(config, seq_len, causal == "1",
                                                  a.passes == "fwdbwd", a.warmup, a.reps)
                print(json.dumps({"config": config, "S": seq_len, "causal": int(causal),
                                  "head_mode": "dense", "pass": a.passes, "ms": ms,
                                  "tflops": tflops, "peak_gib": peak}), flush=True)


if __name__ == "__main__":
    main()
