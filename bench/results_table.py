"""Prints JSON lines (one benchmark row each) as a markdown table, one column per argument
"Header=key" or "Header=key:format" (a Python format spec; booleans print as 0/1). Used by the
GPU A/B scripts (tests/gpu/ab_dense.sh, ab_dilated.sh):

    python3 bench/results_table.py results.jsonl "run=tag" "S=seq_len" "ms=fwd_bwd_ms:.1f"
"""
import json
import sys


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    columns = []
    for spec in sys.argv[2:]:
        header, _, field = spec.partition("=")
        key, _, fmt = field.partition(":")
        columns.append((header, key, fmt))
    print("| " + " | ".join(h for h, _, _ in columns) + " |")
    print("|" + "---|" * len(columns))
    for line in open(sys.argv[1]):
        if not line.strip():
            continue
        row = json.loads(line)
        cells = []
        for _, key, fmt in columns:
            value = row.get(key, "")
            if isinstance(value, bool):
                value = int(value)
            cells.append(format(value, fmt) if fmt and value != "" else str(value))
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
