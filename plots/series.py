"""Cells to plotted series: lines per method (optionally split by parameters), a point per distinct
config with replicates over seeds averaged, the fp16 reference, and how a series is drawn. Shared by
the trade-off and LongBench plots.
"""

import math
import sys

from plot_common import PlotError, natural_key

REFERENCE_METHOD = "fp16"


def config_value(cell, name):
    """A method parameter by name, or a dotted path into the resolved config; None when absent."""
    params = cell.method_params()
    if name in params:
        return params[name]
    node = cell.config
    for key in name.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def flat_config(cell):
    """The resolved config as {dotted key: value}, without the seed."""
    out = {}

    def walk(node, prefix):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}.{k}" if prefix else k)
        else:
            out[prefix] = node
    walk({k: v for k, v in cell.config.items() if k != "seed"}, "")
    return out


def series_name(cell, split):
    parts = [cell.method]
    for name in split:
        value = config_value(cell, name)
        if value is not None:
            parts.append(f"{name.split('.')[-1]}={value}")
    return " ".join(parts)


def replicate_key(cell):
    """Cells with equal keys are replicates: the same resolved config but for the seed."""
    return repr(sorted(flat_config(cell).items()))


def points(cells, metric, x_of, label=None):
    """[{x, y, n, min, max, cells}], one point per distinct config (replicates over seeds averaged,
    their spread in min / max), sorted by x then y. Distinct configs at the same x stay separate.
    With label (a parameter name), each point also carries that parameter's value as "label"."""
    groups = {}
    for c in cells:
        groups.setdefault(replicate_key(c), []).append(c)
    out = []
    for group in groups.values():
        ys = [c.metrics[metric] for c in group]
        out.append({"x": sum(x_of(c) for c in group) / len(group), "y": sum(ys) / len(ys), "n": len(ys),
                    "min": min(ys), "max": max(ys), "cells": sorted(c.cell_id for c in group)})
        if label:
            value = config_value(group[0], label)
            out[-1]["label"] = "" if value is None else str(value)
    return sorted(out, key=lambda p: (p["x"], p["y"]))


def differing_keys(cells):
    """Config keys (dotted; method parameters by their bare name) whose values differ among cells,
    the seed left out."""
    configs = [flat_config(c) for c in cells]
    keys = sorted({k for cfg in configs for k in cfg})
    differ = [k for k in keys if len({repr(cfg.get(k)) for cfg in configs}) > 1]
    return [k[len("method.params."):] if k.startswith("method.params.") else k for k in differ]


def reference(group_cells, metric):
    """The fp16 reference value for the metric, and where it came from; (None, None) if none."""
    fp_cells = [c for c in group_cells if c.method == REFERENCE_METHOD and metric in c.metrics]
    if fp_cells:
        differ = differing_keys(fp_cells)
        if differ:
            sys.stderr.write(f"note: the fp16 reference for {metric} is the mean of {len(fp_cells)} fp16 cells that "
                             f"differ in {', '.join(differ)} (select one with --experiment / --task / --model)\n")
        fp = [c.metrics[metric] for c in fp_cells]
        return sum(fp) / len(fp), f"{REFERENCE_METHOD} cells ({len(fp)})"
    if metric == "ppl":
        carried = [c.metrics["ppl_fp16"] for c in group_cells if "ppl_fp16" in c.metrics]
        if carried:
            if max(carried) - min(carried) > 1e-6 * max(abs(v) for v in carried):
                sys.stderr.write(f"note: ppl_fp16 differs between cells ({min(carried):g} .. {max(carried):g}); "
                                 "the reference line is their mean\n")
            return sum(carried) / len(carried), f"ppl_fp16 of {len(carried)} cells"
    return None, None


def choose_yscale(mode, values):
    """auto: log when every value is positive and they span more than 20x."""
    if mode != "auto":
        return mode
    positive = [v for v in values if v > 0]
    if len(positive) == len(values) and positive and max(positive) / min(positive) > 20:
        return "log"
    return "linear"


def draw_panel(ax, series, styles, ref_value, ref_label):
    for name, pts in series.items():
        colour, marker = styles[name]
        xs, ys = [p["x"] for p in pts], [p["y"] for p in pts]
        ax.plot(xs, ys, color=colour, marker=marker, label=name, markeredgecolor="white", markeredgewidth=0.6)
        lo = [p["y"] - p["min"] for p in pts]
        hi = [p["max"] - p["y"] for p in pts]
        if any(v > 0 for v in lo + hi):
            ax.errorbar(xs, ys, yerr=[lo, hi], fmt="none", ecolor=colour, capsize=3, linewidth=1)
        for p in pts:
            if p.get("label"):
                ax.annotate(p["label"], (p["x"], p["y"]), textcoords="offset points", xytext=(5, 4), fontsize=7.5,
                            color=colour)
    if ref_value is not None:
        ax.axhline(ref_value, color="black", linestyle="--", linewidth=1.2, label=ref_label, zorder=1)


def drawable(cells, metric, methods=None):
    """The non-reference cells with a finite value of metric (of the given methods, if any)."""
    out = []
    for c in cells:
        if c.method == REFERENCE_METHOD or metric not in c.metrics or (methods and c.method not in methods):
            continue
        if not math.isfinite(c.metrics[metric]):
            sys.stderr.write(f"note: cell {c.slug or c.cell_id} has {metric} = {c.metrics[metric]}; not drawn\n")
            continue
        out.append(c)
    return out


def group_series(cells, split):
    """{series name: cells}, names in natural order ('kivi residual=32' before 'kivi residual=128')."""
    groups = {}
    for c in cells:
        groups.setdefault(series_name(c, split), []).append(c)
    return {name: groups[name] for name in sorted(groups, key=natural_key)}


def parse_list(text):
    """'a, b' -> ['a', 'b']; None -> []."""
    return [t.strip() for t in text.split(",") if t.strip()] if text else []


def check_split(cells, split):
    """--split names that no selected cell has are an error naming the parameter."""
    for name in split:
        if all(config_value(c, name) is None for c in cells):
            raise PlotError(f"--split {name}: no selected cell has a parameter '{name}'")


def by_model(cells):
    """[(model, its cells)], models sorted: one figure each."""
    groups = {}
    for c in cells:
        groups.setdefault(c.model, []).append(c)
    return sorted(groups.items())
