"""Shared plumbing of the plot scripts: one-line errors, figure style, stable method styles, saving.

Every script writes each figure as PNG and PDF plus a sidecar JSON holding exactly the numbers it
drew, so a figure can be checked against its data (the tests do) and re-plotted elsewhere.
"""

import argparse
import json
import os
import re
import sys


class PlotError(Exception):
    """A problem with the input (file, key, value); reported as one line, exit code 1."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line ("error: ...", exit code 2)."""

    def error(self, message):
        sys.stderr.write(f"error: {message} (see --help)\n")
        sys.exit(2)


def run(main):
    """Runs main(); a PlotError or a missing matplotlib becomes one line on stderr and exit code 1."""
    try:
        main()
    except PlotError as e:
        sys.stderr.write(f"error: {e}\n")
        sys.exit(1)


def pyplot():
    """matplotlib.pyplot on the Agg back end (no display), with the project's figure style."""
    try:
        import matplotlib
    except ImportError:
        raise PlotError(f"matplotlib is not installed for {sys.executable} "
                        "(Debian: apt-get install python3-matplotlib, or run scripts/setup.sh)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams.update({
        "figure.dpi": 100, "savefig.dpi": 200, "savefig.bbox": "tight",
        "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 8.5,
        "axes.grid": True, "grid.alpha": 0.3, "grid.linestyle": "-",
        "axes.spines.top": False, "axes.spines.right": False,
        "lines.linewidth": 1.6, "lines.markersize": 6,
        "pdf.fonttype": 42,  # TrueType in PDFs: editable text, accepted by paper venues
    })
    return plt


# Fixed colours and markers for the methods the project knows, so a method looks the same in
# every figure; other methods take the next unused style in a stable order.
_KNOWN = {
    "fp16": ("#000000", "*"), "uniform": ("#7f7f7f", "o"), "kivi": ("#1f77b4", "s"),
    "kvmix": ("#d62728", "D"), "kvtuner": ("#2ca02c", "^"), "mixkvq": ("#9467bd", "v"),
}
_SPARE = [("#ff7f0e", "P"), ("#8c564b", "X"), ("#e377c2", "<"), ("#17becf", ">"), ("#bcbd22", "h"),
          ("#1a55a3", "p"), ("#a05d00", "d"), ("#4d4d4d", "8")]


def method_styles(series_names):
    """{series name: (colour, marker)}, in the given order: the first series of a known method
    ('kivi', or 'kivi residual=32' when split) takes its fixed style, the others spare ones."""
    styles, used, spare = {}, {}, iter(_SPARE * 4)
    for name in series_names:
        base = name.split(" ")[0]
        if base in _KNOWN and base not in used:
            styles[name] = _KNOWN[base]
        else:
            styles[name] = next(spare)
        used[base] = True
    return styles


def natural_key(text):
    """Sort key that orders embedded numbers by value: 'residual=32' before 'residual=128'."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", text)]


_METRIC_LABELS = {
    "ppl": "perplexity (lower is better)",
    "ppl_fp16": "perplexity of the fp16 cache",
    "kl_mean": "mean KL(fp16 || quantized) per token (nats)",
    "kl_p99": "99th-percentile KL(fp16 || quantized) (nats)",
    "top1_agreement": "top-1 agreement with fp16 (fraction of tokens)",
    "delta_p_correct": "mean change of p(correct token) vs fp16",
    "longbench/avg": "LongBench average score (0-100)",
    "passkey/acc": "passkey retrieval accuracy",
    "needle/acc": "needle retrieval accuracy",
    "decode_tok_s": "decode tokens/s (generated, all decode steps)",
    "steady_decode_tok_s": "steady-state decode tokens/s (median step)",
    "generate_tok_s": "generated tokens/s over the whole run",
    "kvmix_tok_s": "tokens/s as KVmix counts (prompt included)",
    "prefill_tok_s": "prefill tokens/s",
    "max_batch": "largest batch within the memory budget",
    "peak_memory_gib": "peak memory (GiB)",
    "kv_gib": "KV cache (GiB)",
}


def metric_label(metric):
    if metric in _METRIC_LABELS:
        return _METRIC_LABELS[metric]
    if metric.startswith("longbench/"):
        return f"LongBench {metric.split('/', 1)[1]} score (0-100)"
    return metric


def short_name(path):
    """A model path's last component ('/m/Llama-2-7b/' -> 'Llama-2-7b')."""
    return os.path.basename(str(path).rstrip("/")) or str(path)


def file_stem(*parts):
    """A file name stem from parts, with anything but letters, digits, '.', '-' and '_' made '-'."""
    return "_".join(re.sub(r"[^A-Za-z0-9._-]+", "-", str(p)).strip("-") for p in parts if p not in (None, ""))


def save_figure(plt, fig, out_dir, stem, data):
    """Writes OUT/stem.png, .pdf and the sidecar .json; prints the paths; returns them."""
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise PlotError(f"cannot create output directory '{out_dir}': {e.strerror}")
    paths = [os.path.join(out_dir, f"{stem}.{ext}") for ext in ("png", "pdf", "json")]
    try:
        fig.savefig(paths[0])
        fig.savefig(paths[1])
        with open(paths[2], "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.write("\n")
    except OSError as e:
        raise PlotError(f"cannot write '{e.filename or out_dir}': {e.strerror}")
    plt.close(fig)
    for p in paths[:2]:
        print(f"wrote {p}")
    return paths
