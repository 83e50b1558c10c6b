#!/usr/bin/python3
"""Accuracy-memory trade-off: a metric against average bits and against cache memory.

One figure per (model, task) in the selection, two panels sharing the metric axis: left, the
metric against the average bits per K/V element ((bits_k + bits_v) / 2, or K or V alone with
--bits); right, against the cache's memory relative to a 16-bit cache (or its bytes with
--memory bytes). One line per method (--split PARAM: per method and value of PARAM), a point per
distinct config sorted by x; replicates that differ only in the seed are averaged and drawn with a
min-max bar. The fp16 reference is a dashed line: the metric of the fp16 cells of that model and task, or for perplexity the ppl_fp16
that every quantized ppl cell carries.

    /usr/bin/python3 plots/tradeoff.py --store results/kvlab.sqlite --metric ppl --out results/plots
    kvlab plot tradeoff --store results/kvlab.sqlite --metric kl_mean --split residual

Writes OUT/tradeoff_<model>_<task>_<metric>.{png,pdf,json}; the JSON holds the plotted points.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from kvlab_results import describe_filters, load_results, select  # noqa: E402
from plot_common import (ArgumentParser, PlotError, file_stem, method_styles, metric_label, pyplot,  # noqa: E402
                         run, save_figure, short_name)
from series import (REFERENCE_METHOD, choose_yscale, config_value, draw_panel, drawable, group_series,  # noqa: E402
                    parse_list, points, reference)


def parse_args():
    p = ArgumentParser(prog="kvlab plot tradeoff", description=__doc__.split("\n\n")[0])
    src = p.add_argument_group("input (one of)")
    src.add_argument("--store", help="results store (SQLite) written by kvlab run")
    src.add_argument("--csv", help="CSV export of a store (kvlab results export --csv)")
    p.add_argument("--metric", default="ppl", help="metric to plot (ppl, kl_mean, kl_p99, top1_agreement, "
                   "longbench/avg, passkey/acc, ...; default ppl)")
    p.add_argument("--task", help="only cells of this task")
    p.add_argument("--model", help="only cells of this model (its name or path)")
    p.add_argument("--experiment", help="only cells of this experiment (spec name)")
    p.add_argument("--methods", help="comma list of methods to draw (default: all)")
    p.add_argument("--split", help="comma list of parameters that split a method into several lines "
                   "(e.g. residual, group); a name is a method parameter or a dotted config path")
    p.add_argument("--label", help="annotate each point with this parameter's value (e.g. bits: the nominal "
                   "width beside the bits actually held)")
    p.add_argument("--bits", choices=["avg", "k", "v"], default="avg",
                   help="left panel x: average of K and V bits (default), K bits or V bits")
    p.add_argument("--memory", choices=["ratio", "bytes"], default="ratio",
                   help="right panel x: memory relative to a 16-bit cache (default) or cache bytes")
    p.add_argument("--yscale", choices=["auto", "linear", "log"], default="auto",
                   help="metric axis scale (auto: log when positive values span more than 20x)")
    p.add_argument("--out", default="results/plots", help="output directory (default results/plots)")
    return p.parse_args()


def x_bits(cell, which):
    return {"avg": cell.avg_bits, "k": cell.bits_k, "v": cell.bits_v}[which]


def x_memory(cell, which):
    """None when the cell has no memory figure (it is then left out of the memory panel)."""
    if which == "ratio":
        return cell.memory_ratio
    return None if cell.cache_bytes is None else cell.cache_bytes / 2.0**20


def plot_group(plt, args, model, task, cells, metric, source):
    split = parse_list(args.split)
    ref_value, ref_from = reference(cells, metric)
    drawn = drawable(cells, metric, parse_list(args.methods))
    if not drawn:
        sys.stderr.write(f"note: model {model}, task {task}: no finite '{metric}' of a method drawn; no figure\n")
        return None
    by_series = group_series(drawn, split)
    bits_label = {"avg": "average bits per K/V element", "k": "bits per key element",
                  "v": "bits per value element"}[args.bits]
    mem_label = ("KV cache memory (% of a 16-bit cache)" if args.memory == "ratio"
                 else "KV cache size (MiB)")
    panels = {
        "bits": {"x": {"avg": "avg_bits", "k": "bits_k", "v": "bits_v"}[args.bits], "label": bits_label,
                 "of": lambda c: x_bits(c, args.bits)},
        "memory": {"x": "memory_ratio" if args.memory == "ratio" else "cache_mib", "label": mem_label,
                   "of": lambda c: x_memory(c, args.memory)},
    }
    names = list(by_series)
    data = {"kind": "tradeoff", "metric": metric, "model": model, "task": task, "source": source,
            "reference": None if ref_value is None else {"value": ref_value, "from": ref_from},
            "panels": {}}
    for key, panel in panels.items():
        has_x = {name: [c for c in by_series[name] if panel["of"](c) is not None] for name in names}
        lacking = sum(len(by_series[name]) - len(has_x[name]) for name in names)
        if lacking:
            sys.stderr.write(f"note: {lacking} cell(s) of model {model}, task {task} have no {panel['x']}; "
                             f"left out of the {key} panel\n")
        series = {name: points(has_x[name], metric, panel["of"], args.label) for name in names if has_x[name]}
        data["panels"][key] = {"x": panel["x"], "series": series}

    styles = method_styles(names)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
    all_y = [p[k] for s in data["panels"]["bits"]["series"].values() for p in s for k in ("min", "max")]
    yscale = choose_yscale(args.yscale, all_y)
    if yscale == "log" and min(all_y) <= 0:
        raise PlotError(f"--yscale log: metric '{metric}' has values <= 0")
    # A reference at 0 (KL of fp16 to itself) has no place on a log axis; the axis floor stands for it.
    data["reference_drawn"] = ref_value is not None and not (yscale == "log" and ref_value <= 0)
    ref_label = f"fp16 cache ({ref_value:.4g})" if data["reference_drawn"] else None
    for ax, (key, panel) in zip(axes, panels.items()):
        draw_panel(ax, data["panels"][key]["series"], styles, ref_value if data["reference_drawn"] else None,
                   ref_label)
        ax.set_xlabel(panel["label"])
    axes[0].set_yscale(yscale)
    axes[0].set_ylabel(metric_label(metric))
    if args.memory == "ratio":
        axes[1].xaxis.set_major_formatter(plt.matplotlib.ticker.PercentFormatter(1.0, decimals=0))
    title = f"{short_name(model)} · task {task}"
    experiments = sorted({str(c.experiment) for c in cells if c.experiment})
    if len(experiments) == 1:
        title += f" · {experiments[0]}"
    fig.suptitle(title, fontweight="bold")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), frameon=False,
               bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.07 + 0.04 * ((len(labels) - 1) // 4), 1, 1))
    stem = file_stem("tradeoff", short_name(model), task, metric)
    return save_figure(plt, fig, args.out, stem, data)


def main():
    args = parse_args()
    cells = load_results(args.store, args.csv)
    source = args.store or args.csv
    if not cells:
        raise PlotError(f"'{source}' holds no finished cells")
    chosen = select(cells, model=args.model, task=args.task, experiment=args.experiment)
    if not chosen:
        raise PlotError(f"no cell in '{source}' matches {describe_filters(args.model, args.task, args.experiment)} "
                        f"(models: {', '.join(sorted({str(c.model) for c in cells}))}; "
                        f"tasks: {', '.join(sorted({str(c.task) for c in cells}))}; "
                        f"experiments: {', '.join(sorted({str(c.experiment) for c in cells}))})")
    with_metric = [c for c in chosen if args.metric in c.metrics]
    if not with_metric:
        available = sorted({m for c in chosen for m in c.metrics})
        filters = describe_filters(args.model, args.task, args.experiment)
        raise PlotError(f"metric '{args.metric}' is not in '{source}'{' for ' + filters if filters else ''} "
                        f"(available: {', '.join(available) or 'none'})")
    if args.methods:
        wanted = parse_list(args.methods)
        unknown = [m for m in wanted if m not in {c.method for c in with_metric}]
        if unknown:
            raise PlotError(f"--methods: no cell of method(s) {', '.join(unknown)} has metric '{args.metric}' "
                            f"(methods: {', '.join(sorted({c.method for c in with_metric}))})")
    for name in parse_list(args.split) + ([args.label] if args.label else []):
        if all(config_value(c, name) is None for c in with_metric):
            option = "--label" if name == args.label else "--split"
            raise PlotError(f"{option} {name}: no cell with metric '{args.metric}' has a parameter '{name}'")
    groups = {}
    for c in chosen:
        groups.setdefault((c.model, c.task), []).append(c)
    methods = parse_list(args.methods)
    # Groups with nothing of the metric to draw (another task, only fp16, other methods) are skipped.
    todo = [(key, group) for key, group in sorted(groups.items())
            if any(args.metric in c.metrics and c.method != REFERENCE_METHOD and (not methods or c.method in methods)
                   for c in group)]
    nothing = (f"nothing to draw: no cell of a quantized method has a finite '{args.metric}' in the selection "
               "(fp16 cells are the reference line, not a line of their own)")
    if not todo:
        raise PlotError(nothing)
    plt = pyplot()
    wrote = [plot_group(plt, args, model, task, group, args.metric, source) for (model, task), group in todo]
    if not any(wrote):
        raise PlotError(nothing)


if __name__ == "__main__":
    run(main)
