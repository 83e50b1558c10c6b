"""Cells to plotted series: lines per method (optionally split by parameters), points averaged at
equal x, the fp16 reference, and how a series is drawn. Shared by the trade-off and LongBench plots.
"""

import math
import sys

from plot_common import natural_key

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


def points(cells, metric, x_of):
    """[{x, y, n, min, max, cells}] sorted by x; cells with the same x averaged."""
    by_x = {}
    for c in cells:
        by_x.setdefault(round(x_of(c), 9), []).append(c)
    out = []
    for x in sorted(by_x):
        ys = [c.metrics[metric] for c in by_x[x]]
        out.append({"x": x, "y": sum(ys) / len(ys), "n": len(ys), "min": min(ys), "max": max(ys),
                    "cells": sorted(c.cell_id for c in by_x[x])})
    return out


def note_averaged(name, cells, x_of, x_unit):
    """Says on stderr when cells drawn as one point differ in more than the seed."""
    by_x = {}
    for c in cells:
        by_x.setdefault(round(x_of(c), 9), []).append(c)
    for x, group in sorted(by_x.items()):
        if len(group) < 2:
            continue
        configs = [flat_config(c) for c in group]
        keys = sorted({k for cfg in configs for k in cfg})
        differ = [k for k in keys if len({repr(cfg.get(k)) for cfg in configs}) > 1]
        if differ:
            names = [k[len("method.params."):] if k.startswith("method.params.") else k for k in differ]
            sys.stderr.write(f"note: '{name}' has {len(group)} cells at {x:g} {x_unit} that differ in "
                             f"{', '.join(names)}; drawn as their mean (use --split {names[0]} to draw them "
                             "apart)\n")


def reference(group_cells, metric):
    """The fp16 reference value for the metric, and where it came from; (None, None) if none."""
    fp = [c.metrics[metric] for c in group_cells if c.method == REFERENCE_METHOD and metric in c.metrics]
    if fp:
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
