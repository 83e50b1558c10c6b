#!/usr/bin/python3
"""Passkey and needle retrieval accuracy as heat maps of context length x depth: one row of panels
per task, one panel per method (the fp16 cache first), each cell annotated with its accuracy.
One figure per model.

    /usr/bin/python3 plots/retrieval.py --store results/kvlab.sqlite --out results/plots
    kvlab plot retrieval --store results/kvlab.sqlite --tasks passkey

Writes OUT/retrieval_<model>.{png,pdf,json}; the JSON holds every panel's lengths, depths and
accuracies (replicates over seeds averaged; null where no cell ran).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from kvlab_results import describe_filters, load_results, select  # noqa: E402
from plot_common import ArgumentParser, PlotError, file_stem, pyplot, run, save_figure, short_name  # noqa: E402
from series import REFERENCE_METHOD, by_model, check_split, natural_key, parse_list, series_name  # noqa: E402

TASKS = ("passkey", "needle")


def parse_args():
    p = ArgumentParser(prog="kvlab plot retrieval", description=__doc__.split("\n\n")[0])
    src = p.add_argument_group("input (one of)")
    src.add_argument("--store", help="results store (SQLite) written by kvlab run")
    src.add_argument("--csv", help="CSV export of a store (kvlab results export --csv)")
    p.add_argument("--tasks", help="comma list of passkey, needle (default: those in the results)")
    p.add_argument("--model", help="only cells of this model (its name or path)")
    p.add_argument("--experiment", help="only cells of this experiment (spec name)")
    p.add_argument("--methods", help="comma list of methods to draw (default: all)")
    p.add_argument("--split", help="comma list of parameters that split a method into several panels")
    p.add_argument("--out", default="results/plots", help="output directory (default results/plots)")
    return p.parse_args()


def task_param(cell, name):
    task = cell.config.get("task", {})
    params = task.get("params", {}) if isinstance(task, dict) else {}
    return params.get(name) if isinstance(params, dict) else None


def panel(cells, metric):
    """{lengths, depths, acc[length][depth], n[length][depth], avg_bits}: replicates averaged."""
    sums = {}
    for c in cells:
        key = (task_param(c, "context_length"), task_param(c, "depth"))
        if None in key:
            raise PlotError(f"cell {c.slug or c.cell_id} has {metric} but no context_length / depth parameter")
        sums.setdefault(key, []).append(c.metrics[metric])
    lengths = sorted({k[0] for k in sums})
    depths = sorted({k[1] for k in sums})
    acc = [[None if (n, d) not in sums else sum(sums[(n, d)]) / len(sums[(n, d)]) for d in depths] for n in lengths]
    counts = [[len(sums.get((n, d), [])) for d in depths] for n in lengths]
    return {"lengths": lengths, "depths": depths, "acc": acc, "n": counts,
            "avg_bits": sum(c.avg_bits for c in cells) / len(cells)}


def panel_order(name):
    """The fp16 cache first, the rest in natural order."""
    return (name.split(" ")[0] != REFERENCE_METHOD, natural_key(name))


def plot_model(plt, args, model, cells, tasks, source):
    split = parse_list(args.split)
    methods = parse_list(args.methods)
    rows = {}
    for task in tasks:
        metric = f"{task}/acc"
        drawn = [c for c in cells if metric in c.metrics and (not methods or c.method in methods)]
        groups = {}
        for c in drawn:
            groups.setdefault(series_name(c, split), []).append(c)
        if groups:
            rows[task] = {name: panel(groups[name], metric) for name in sorted(groups, key=panel_order)}
    if not rows:
        return None
    cols = max(len(r) for r in rows.values())
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.9 * cols + 0.8, 2.5 * len(rows) + 0.5), squeeze=False)
    image = None
    for i, (task, panels) in enumerate(rows.items()):
        for j in range(cols):
            ax = axes[i][j]
            if j >= len(panels):
                ax.set_visible(False)
                continue
            name, p = list(panels.items())[j]
            grid = [[float("nan") if v is None else v for v in row] for row in p["acc"]]
            image = ax.imshow(grid, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto", origin="lower")
            ax.grid(False)
            for r, row in enumerate(p["acc"]):
                for k, v in enumerate(row):
                    ax.text(k, r, "-" if v is None else f"{v:.2f}", ha="center", va="center", fontsize=8)
            ax.set_xticks(range(len(p["depths"])), [f"{d:g}" for d in p["depths"]])
            ax.set_yticks(range(len(p["lengths"])), [str(n) for n in p["lengths"]])
            bits = "" if name.split(" ")[0] == REFERENCE_METHOD else f" ({p['avg_bits']:.2f} b)"
            ax.set_title(f"{task}: {name}{bits}", fontsize=9)
            if i == len(rows) - 1:
                ax.set_xlabel("depth (0 = start)")
            if j == 0:
                ax.set_ylabel("context length (tokens)")
    fig.suptitle(f"{short_name(model)} · retrieval accuracy", fontweight="bold")
    fig.tight_layout(rect=(0, 0, 0.93, 1))
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), fraction=0.02, pad=0.02, label="accuracy")
    data = {"kind": "retrieval", "model": model, "source": source, "tasks": rows}
    return save_figure(plt, fig, args.out, file_stem("retrieval", short_name(model)), data)


def main():
    args = parse_args()
    cells = load_results(args.store, args.csv)
    source = args.store or args.csv
    chosen = select(cells, model=args.model, experiment=args.experiment)
    present = [t for t in TASKS if any(f"{t}/acc" in c.metrics for c in chosen)]
    if not present:
        filters = describe_filters(args.model, None, args.experiment)
        raise PlotError(f"no passkey/acc or needle/acc metric in '{source}'{' for ' + filters if filters else ''}")
    tasks = parse_list(args.tasks) or present
    unknown = [t for t in tasks if t not in present]
    if unknown:
        raise PlotError(f"--tasks: no metric {unknown[0]}/acc in '{source}' (tasks: {', '.join(present)})")
    check_split(chosen, parse_list(args.split))
    plt = pyplot()
    wrote = [plot_model(plt, args, model, group, tasks, source) for model, group in by_model(chosen)]
    if not any(wrote):
        raise PlotError(f"no cell in '{source}' has a retrieval accuracy to draw for {', '.join(tasks)}")


if __name__ == "__main__":
    run(main)
