#!/usr/bin/python3
"""Where a decode step's time goes, from `kvlab bench throughput --json` per-step times.

Step i of a run decodes with P + i tokens cached, so its time is close to a + b * (P + i): a is the
part that does not grow with the context (the weight matmuls, norms, the LM head, sampling), b the
attention's cost per cached token. A least-squares line through every step gives both; the table
shows them with the attention's share of a step at the run's mean context.

    /usr/bin/python3 scripts/throughput_breakdown.py results/throughput.json [more.json ...]
"""

import json
import sys


def fit(xs, ys):
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return my, 0.0
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return my - b * mx, b


def main(paths):
    print(f"{'file':<28} {'method':<26} {'batch':>5} {'ms/step':>8} {'fixed ms':>9} {'attn us/tok':>11} "
          f"{'attn share':>10}")
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        for p in data["points"]:
            steps = p.get("step_seconds") or []
            if len(steps) < 8:
                continue
            # The first steps carry warm-up effects (page faults of freshly grown buffers): skip 2.
            xs = [p["prompt_len"] + i for i in range(2, len(steps))]
            ys = [1e3 * s for s in steps[2:]]
            a, b = fit(xs, ys)
            mean_ctx = sum(xs) / len(xs)
            mean_ms = sum(ys) / len(ys)
            share = b * mean_ctx / mean_ms if mean_ms > 0 else 0.0
            label = p.get("label", p["method"])
            print(f"{path[-28:]:<28} {label:<26} {p['batch']:>5} {mean_ms:>8.2f} {a:>9.2f} {1e3 * b:>11.3f} "
                  f"{100 * share:>9.1f}%")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
