#!/usr/bin/python3
"""Per-layer K/V bit allocation of a plan file as a heat map: two rows (K, V) by layers, each cell
coloured and annotated with its bits.

    /usr/bin/python3 plots/plan.py PLAN.yaml --out results/plots
    kvlab plot plan PLAN.yaml --out results/plots

Writes OUT/plan_<plan file name>.{png,pdf,json}; the JSON holds the bits drawn.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from plan_file import bit_colours, load_plan, text_colour  # noqa: E402
from plot_common import ArgumentParser, file_stem, pyplot, run, save_figure, short_name  # noqa: E402


def parse_args():
    p = ArgumentParser(prog="kvlab plot plan", description=__doc__.split("\n\n")[0])
    p.add_argument("plan", help="plan YAML file (from kvlab profile / search, or written by hand)")
    p.add_argument("--out", default="results/plots", help="output directory (default results/plots)")
    p.add_argument("--title", help="figure title (default: method, model and average bits)")
    return p.parse_args()


def main():
    args = parse_args()
    plan = load_plan(args.plan)
    plt = pyplot()
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    k_bits, v_bits = plan.column("k_bits"), plan.column("v_bits")
    n = len(k_bits)
    widths = sorted(set(k_bits) | set(v_bits))
    colours = bit_colours(plt, widths)
    index = {b: i for i, b in enumerate(widths)}
    grid = [[index[b] for b in k_bits], [index[b] for b in v_bits]]  # [2, layers]: colour index

    fig_w = min(max(6.0, 0.34 * n + 2.0), 22.0)
    fig, ax = plt.subplots(figsize=(fig_w, 2.6))
    ax.imshow(grid, cmap=ListedColormap([colours[b] for b in widths]), vmin=-0.5, vmax=len(widths) - 0.5,
              aspect="auto", interpolation="nearest")
    if n <= 64:
        size = 9 if n <= 32 else 7
        for row, bits in enumerate((k_bits, v_bits)):
            for layer, b in enumerate(bits):
                ax.text(layer, row, str(b), ha="center", va="center", fontsize=size, color=text_colour(colours[b]))
    ax.set_yticks([0, 1], ["K", "V"])
    step = 1 if n <= 40 else 4
    ax.set_xticks(range(0, n, step))
    ax.set_xlabel("layer")
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_xticks([x - 0.5 for x in range(1, n)], minor=True)
    ax.set_yticks([0.5], minor=True)
    ax.tick_params(which="minor", length=0)
    ax.grid(which="minor", color="white", linewidth=1.5)

    k_avg, v_avg = sum(k_bits) / n, sum(v_bits) / n
    model = f" · {short_name(plan.model)}" if plan.model else ""
    ax.set_title(args.title or f"{plan.method} plan{model} · mean K {k_avg:.2f} / V {v_avg:.2f} bits",
                 fontweight="bold")
    ax.legend(handles=[Patch(facecolor=colours[b], label=f"{b} bits") for b in widths], loc="upper left",
              bbox_to_anchor=(1.005, 1.0), frameon=False, title="width")
    fig.tight_layout()

    data = {"kind": "plan", "plan": args.plan, "method": plan.method, "model": plan.model, "num_layers": n,
            "k_bits": k_bits, "v_bits": v_bits, "k_avg": k_avg, "v_avg": v_avg}
    stem = file_stem("plan", os.path.splitext(os.path.basename(args.plan))[0])
    save_figure(plt, fig, args.out, stem, data)


if __name__ == "__main__":
    run(main)
