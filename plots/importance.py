#!/usr/bin/python3
"""Layer importance of a plan with scores (KVmix: gradient norms of k_proj / v_proj): bars of
k_score and v_score per layer, each bar coloured by the bits the plan assigned to that layer, so the
tiers the scores produced are visible.

    /usr/bin/python3 plots/importance.py PLAN.yaml --out results/plots
    kvlab plot importance PLAN.yaml --out results/plots

Writes OUT/importance_<plan file name>.{png,pdf,json}; the JSON holds the scores and bits drawn.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from plan_file import bit_colours, load_plan  # noqa: E402
from plot_common import ArgumentParser, PlotError, file_stem, pyplot, run, save_figure, short_name  # noqa: E402

# What the scores are, for the methods whose plan files carry them.
SCORE_LABELS = {"kvmix": ("‖∂loss/∂W_k‖ (k_proj gradient norm)", "‖∂loss/∂W_v‖ (v_proj gradient norm)")}


def parse_args():
    p = ArgumentParser(prog="kvlab plot importance", description=__doc__.split("\n\n")[0])
    p.add_argument("plan", help="plan YAML file whose layers carry k_score and v_score (kvlab profile kvmix)")
    p.add_argument("--out", default="results/plots", help="output directory (default results/plots)")
    p.add_argument("--yscale", choices=["auto", "linear", "log"], default="auto",
                   help="score axis scale (auto: log when positive scores span more than 100x)")
    return p.parse_args()


def main():
    args = parse_args()
    plan = load_plan(args.plan)
    if not plan.has_scores():
        missing = next(i for i, layer in enumerate(plan.layers)
                       if not all(isinstance(layer.get(k), (int, float)) for k in ("k_score", "v_score")))
        raise PlotError(f"{args.plan}: layers[{missing}] has no k_score / v_score; an importance plot needs a "
                        "plan with scores (e.g. from kvlab profile kvmix)")
    plt = pyplot()
    from matplotlib.patches import Patch

    n = len(plan.layers)
    widths = sorted(set(plan.column("k_bits")) | set(plan.column("v_bits")))
    colours = bit_colours(plt, widths)
    labels = SCORE_LABELS.get(plan.method, ("k_score", "v_score"))
    fig_w = min(max(6.5, 0.28 * n + 2.5), 22.0)
    fig, axes = plt.subplots(2, 1, figsize=(fig_w, 5.2), sharex=True)
    data = {"kind": "importance", "plan": args.plan, "method": plan.method, "model": plan.model, "num_layers": n}
    for ax, kind, label in zip(axes, ("k", "v"), labels):
        scores, bits = plan.column(f"{kind}_score"), plan.column(f"{kind}_bits")
        ax.bar(range(n), scores, color=[colours[b] for b in bits], edgecolor="#333333", linewidth=0.4, width=0.8)
        positive = [s for s in scores if s > 0]
        log = args.yscale == "log" or (args.yscale == "auto" and len(positive) == n and max(positive) / min(positive) > 100)
        if log and len(positive) < n:
            raise PlotError(f"--yscale log: {args.plan} has {kind}_score values <= 0")
        ax.set_yscale("log" if log else "linear")
        ax.set_ylabel(f"{kind.upper()} score", fontweight="bold")
        ax.set_title(label, fontsize=9, loc="left")
        ax.grid(axis="x", visible=False)
        # Rank 1 = the most important layer; a tier is the set of layers given the same width.
        ranks = {layer: r + 1 for r, layer in enumerate(sorted(range(n), key=lambda i: -scores[i]))}
        data[f"{kind}_score"], data[f"{kind}_bits"] = scores, bits
        data[f"{kind}_rank"] = [ranks[i] for i in range(n)]
        data[f"{kind}_tiers"] = {str(b): [i for i in range(n) if bits[i] == b] for b in sorted(set(bits))}
    step = 1 if n <= 40 else 4
    axes[1].set_xticks(range(0, n, step))
    axes[1].set_xlabel("layer")
    axes[1].set_xlim(-0.6, n - 0.4)
    model = f" · {short_name(plan.model)}" if plan.model else ""
    fig.suptitle(f"{plan.method} layer importance{model}", fontweight="bold")
    fig.legend(handles=[Patch(facecolor=colours[b], edgecolor="#333333", linewidth=0.4, label=f"{b} bits")
                        for b in widths], loc="upper right", ncol=len(widths), frameon=False,
               title="bits assigned", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    stem = file_stem("importance", os.path.splitext(os.path.basename(args.plan))[0])
    save_figure(plt, fig, args.out, stem, data)


if __name__ == "__main__":
    run(main)
