#!/usr/bin/python3
"""LongBench score per task against average bits: one small panel per task (metrics named
longbench/<task>, the average longbench/avg last), one line per method, the fp16 score dashed.
One figure per model.

    /usr/bin/python3 plots/longbench.py --store results/kvlab.sqlite --out results/plots
    kvlab plot longbench --store results/kvlab.sqlite --tasks qasper,trec,avg

Writes OUT/longbench_<model>.{png,pdf,json}; the JSON holds the plotted points per task.
"""

import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from kvlab_results import describe_filters, load_results, select  # noqa: E402
from plot_common import ArgumentParser, PlotError, file_stem, method_styles, pyplot, run, save_figure, short_name  # noqa: E402
from series import (by_model, check_split, draw_panel, drawable, group_series, parse_list, points,  # noqa: E402
                    reference)

PREFIX = "longbench/"


def parse_args():
    p = ArgumentParser(prog="kvlab plot longbench", description=__doc__.split("\n\n")[0])
    src = p.add_argument_group("input (one of)")
    src.add_argument("--store", help="results store (SQLite) written by kvlab run")
    src.add_argument("--csv", help="CSV export of a store (kvlab results export --csv)")
    p.add_argument("--tasks", help="comma list of LongBench tasks to show (default: every one in the results; "
                   "'avg' is the average)")
    p.add_argument("--task", help="only cells whose task column is this")
    p.add_argument("--model", help="only cells of this model (its name or path)")
    p.add_argument("--experiment", help="only cells of this experiment (spec name)")
    p.add_argument("--methods", help="comma list of methods to draw (default: all)")
    p.add_argument("--split", help="comma list of parameters that split a method into several lines")
    p.add_argument("--cols", type=int, default=4, help="panels per row (default 4)")
    p.add_argument("--out", default="results/plots", help="output directory (default results/plots)")
    return p.parse_args()


def task_order(name):
    """Tasks alphabetically, the average last."""
    return (name == "avg", name)


def plot_model(plt, args, model, cells, tasks, source):
    split = parse_list(args.split)
    methods = parse_list(args.methods)
    panels = {}
    for task in tasks:
        metric = PREFIX + task
        drawn = drawable(cells, metric, methods)
        if not drawn:
            continue
        by_series = group_series(drawn, split)
        value, origin = reference(cells, metric)
        panels[task] = {"reference": None if value is None else {"value": value, "from": origin},
                        "series": {name: points(group, metric, lambda c: c.avg_bits)
                                   for name, group in by_series.items()}}
    if not panels:
        return None

    names = []
    for panel in panels.values():
        names += [n for n in panel["series"] if n not in names]
    styles = method_styles(names)
    cols = max(1, min(args.cols, len(panels)))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.7 * rows + 0.6), squeeze=False)
    for i, (task, panel) in enumerate(panels.items()):
        ax = axes[i // cols][i % cols]
        ref = panel["reference"]
        draw_panel(ax, panel["series"], styles, ref["value"] if ref else None, "fp16 cache" if ref else None)
        title = "average" if task == "avg" else task
        ax.set_title(f"{title} (fp16 {ref['value']:.2f})" if ref else title, fontweight="bold" if task == "avg" else None)
        if i % cols == 0:
            ax.set_ylabel("score (0-100)")
        if i // cols == rows - 1 or i + cols >= len(panels):
            ax.set_xlabel("average bits per K/V element")
    for j in range(len(panels), rows * cols):
        axes[j // cols][j % cols].set_visible(False)
    fig.suptitle(f"{short_name(model)} · LongBench score per task", fontweight="bold")
    labels, handles = [], []
    for ax in fig.axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                labels.append(label)
                handles.append(h)
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), frameon=False)
    legend_rows = math.ceil(len(labels) / 5)
    fig.tight_layout(rect=(0, (0.1 + 0.25 * legend_rows) / (2.7 * rows + 0.6), 1, 1))
    data = {"kind": "longbench", "model": model, "source": source, "x": "avg_bits", "tasks": panels}
    return save_figure(plt, fig, args.out, file_stem("longbench", short_name(model)), data)


def main():
    args = parse_args()
    cells = load_results(args.store, args.csv)
    source = args.store or args.csv
    chosen = select(cells, model=args.model, task=args.task, experiment=args.experiment)
    present = sorted({m[len(PREFIX):] for c in chosen for m in c.metrics if m.startswith(PREFIX)}, key=task_order)
    if not present:
        filters = describe_filters(args.model, args.task, args.experiment)
        raise PlotError(f"no LongBench metric (longbench/<task>) in '{source}'{' for ' + filters if filters else ''}")
    tasks = parse_list(args.tasks) or present
    unknown = [t for t in tasks if t not in present]
    if unknown:
        raise PlotError(f"--tasks: no metric longbench/{unknown[0]} in '{source}' (tasks: {', '.join(present)})")
    check_split(chosen, parse_list(args.split))
    plt = pyplot()
    wrote = [plot_model(plt, args, model, group, tasks, source) for model, group in by_model(chosen)]
    if not any(wrote):
        raise PlotError(f"no quantized cell in '{source}' has a LongBench score to draw")


if __name__ == "__main__":
    run(main)
