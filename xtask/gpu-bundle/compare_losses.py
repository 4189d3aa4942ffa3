#!/usr/bin/env python3
"""Compares the losses of a training run's metrics.jsonl with a reference run's (same config,
seed, data and noise; e.g. bf16 matmuls on a GPU against f32 on the CPU). Prints one line of
numbers; exit 1 when the curves do not follow each other.

"Follow" (bf16 rounds every matmul operand to 8 mantissa bits, so the bits differ from the first
step on and the trajectories drift apart slowly): the first step's loss within 2 % (identical
weights, only rounding differs) and the mean loss of every window of WINDOW steps within 10 %.

Usage: compare_losses.py RUN/metrics.jsonl REFERENCE.jsonl [N_STEPS]
"""
import json
import sys


def losses(path):
    out = {}
    with open(path) as f:
        for line in f:
            row = json.loads(line)
            if "loss" in row and "step" in row:
                out[int(row["step"])] = float(row["loss"])
    return out


def main():
    run, ref = losses(sys.argv[1]), losses(sys.argv[2])
    n = int(sys.argv[3]) if len(sys.argv) > 3 else max(ref)
    steps = [s for s in range(1, n + 1) if s in ref]
    missing = [s for s in steps if s not in run]
    if not steps or missing:
        print(f"FAIL: steps missing from the run: {missing[:5]} (of {len(steps)} reference steps)")
        return 1
    window = min(20, len(steps))
    rel = lambda a, b: abs(a - b) / max(abs(b), 1e-12)
    first = rel(run[steps[0]], ref[steps[0]])
    worst_window, worst_at = 0.0, steps[0]
    for i in range(0, len(steps), window):
        w = steps[i:i + window]
        d = rel(sum(run[s] for s in w) / len(w), sum(ref[s] for s in w) / len(w))
        if d > worst_window:
            worst_window, worst_at = d, w[0]
    worst_step = max(rel(run[s], ref[s]) for s in steps)
    ok = first <= 0.02 and worst_window <= 0.10
    print(
        f"{'PASS' if ok else 'FAIL'}: {len(steps)} steps; loss at step {steps[0]} {run[steps[0]]:.4f} vs {ref[steps[0]]:.4f} "
        f"({100 * first:.2f} %); worst {window}-step mean {100 * worst_window:.2f} % (from step {worst_at}); "
        f"worst single step {100 * worst_step:.1f} %; final loss {run[steps[-1]]:.4f} vs {ref[steps[-1]]:.4f}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
