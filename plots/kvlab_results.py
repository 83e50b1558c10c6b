"""Read kvlab results (the SQLite store or its CSV export) into plain Python objects.

The plots only read results; they never run an experiment. Two inputs carry the same data:

SQLite store (written by `kvlab run`): tables `cells` (one row per finished cell) and `metrics`
(cell_id, name, value), as in the store schema.

CSV export, in either of two layouts (told apart by the header):

Wide, as `kvlab results export --csv` writes it: one row per cell; the `cells` columns below (and
`seed`), one column per parameter named `task.<name>` / `method.<name>` (ignored here: config_json
carries them), and one column per metric (named as the metric, e.g. `ppl`, `longbench/avg`; empty
where the cell has no such metric).

Long: one row per (cell, metric), with a header row naming these columns (comma-separated, any
order; extra columns are ignored):

    cell_id, experiment, slug, model, task, method, config_json, bits_k, bits_v, cache_bytes,
    memory_ratio, seconds, device, git_rev, finished_at, metric, value

The first fifteen are the `cells` columns, repeated on every row of the cell; `metric` and `value`
are the metric's name and value (metrics.name, metrics.value). Empty fields read as missing.
Required: cell_id, model, task, method, bits_k, bits_v, metric, value (a cell without memory_ratio or
cache_bytes is left out of the memory panel only).
"""

import csv
import json
import os
import sqlite3

from plot_common import PlotError

CELL_COLUMNS = ["cell_id", "experiment", "slug", "model", "task", "method", "config_json", "bits_k", "bits_v",
                "cache_bytes", "memory_ratio", "seconds", "device", "git_rev", "finished_at"]
CSV_COLUMNS = CELL_COLUMNS + ["metric", "value"]
REQUIRED_COLUMNS = ["cell_id", "model", "task", "method", "bits_k", "bits_v"]
NUMERIC_COLUMNS = {"bits_k": float, "bits_v": float, "cache_bytes": int, "memory_ratio": float, "seconds": float}


class Cell:
    """One finished cell: its `cells` columns as attributes plus `metrics` (name -> value)."""

    def __init__(self, row):
        for name in CELL_COLUMNS:
            setattr(self, name, row.get(name))
        self.metrics = {}
        try:
            self.config = json.loads(self.config_json) if self.config_json else {}
        except ValueError:
            self.config = {}

    @property
    def avg_bits(self):
        """Average bits per cached element over K and V."""
        return (self.bits_k + self.bits_v) / 2.0

    def method_params(self):
        """The method's resolved parameters from config_json ({} when absent)."""
        method = self.config.get("method", {})
        params = method.get("params", {}) if isinstance(method, dict) else {}
        return params if isinstance(params, dict) else {}

    def seed(self):
        return self.config.get("seed")


def _number(kind, text, where):
    if text is None or text == "":
        return None
    try:
        return kind(float(text)) if kind is int else kind(text)
    except (TypeError, ValueError):
        raise PlotError(f"{where}: '{text}' is not a number")


def _typed(row, where):
    out = dict(row)
    for name, kind in NUMERIC_COLUMNS.items():
        out[name] = _number(kind, row.get(name), f"{where}: column '{name}'")
    return out


def _check_cell(cell, where):
    for name in REQUIRED_COLUMNS:
        if getattr(cell, name) in (None, ""):
            raise PlotError(f"{where}: cell {cell.cell_id or '?'} has no '{name}'")


def load_store(path):
    """Cells of a SQLite store, opened read-only (a missing file is an error, never created)."""
    if not os.path.isfile(path):
        raise PlotError(f"results store '{path}' does not exist")
    try:
        db = sqlite3.connect(f"file:{os.path.abspath(path)}?mode=ro", uri=True)
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as e:
        raise PlotError(f"results store '{path}': not a SQLite database ({e})")
    for table in ("cells", "metrics"):
        if table not in tables:
            raise PlotError(f"results store '{path}': no table '{table}' (not a kvlab results store)")
    have = [r[1] for r in db.execute("PRAGMA table_info(cells)")]
    missing = [c for c in REQUIRED_COLUMNS if c not in have]
    if missing:
        raise PlotError(f"results store '{path}': table 'cells' lacks column(s) {', '.join(missing)}")
    columns = [c for c in CELL_COLUMNS if c in have]
    cells = {}
    for values in db.execute(f"SELECT {', '.join(columns)} FROM cells"):
        row = dict(zip(columns, values))
        cell = Cell(row)
        _check_cell(cell, f"results store '{path}'")
        cells[cell.cell_id] = cell
    for cell_id, name, value in db.execute("SELECT cell_id, name, value FROM metrics"):
        if cell_id in cells and value is not None:
            cells[cell_id].metrics[name] = float(value)
    db.close()
    return list(cells.values())


def load_csv(path):
    """Cells of a CSV export (one row per cell and metric; columns in the module docstring)."""
    if not os.path.isfile(path):
        raise PlotError(f"results CSV '{path}' does not exist")
    cells = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames = [name.strip() for name in reader.fieldnames or []]
        long_layout = "metric" in header and "value" in header
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise PlotError(f"results CSV '{path}': missing column(s) {', '.join(missing)} "
                            f"(expected: {', '.join(CSV_COLUMNS)}, or kvlab results export's one row per cell)")
        if not long_layout:
            return _wide_cells(reader, header, path)
        for line, row in enumerate(reader, start=2):
            where = f"{path}:{line}"
            typed = _typed(row, where)
            cell = cells.get(row["cell_id"])
            if cell is None:
                cell = cells[row["cell_id"]] = Cell(typed)
                _check_cell(cell, where)
            value = _number(float, row["value"], f"{where}: column 'value'")
            if row["metric"] and value is not None:
                cell.metrics[row["metric"]] = value
    return list(cells.values())


PARAM_PREFIXES = ("task.", "method.", "calibration.", "model.")


def _wide_cells(reader, header, path):
    """Cells of `kvlab results export --csv` (one row per cell, a column per metric)."""
    metrics = [h for h in header if h not in CELL_COLUMNS and h != "seed" and not h.startswith(PARAM_PREFIXES)]
    cells = []
    for line, row in enumerate(reader, start=2):
        where = f"{path}:{line}"
        cell = Cell(_typed(row, where))
        _check_cell(cell, where)
        for name in metrics:
            value = _number(float, row.get(name), f"{where}: column '{name}'")
            if value is not None:
                cell.metrics[name] = value
        cells.append(cell)
    return cells


def load_results(store=None, csv_path=None):
    """Cells from exactly one of a store or a CSV export."""
    if bool(store) == bool(csv_path):
        raise PlotError("give one input: --store FILE (SQLite) or --csv FILE (kvlab results export --csv)")
    return load_store(store) if store else load_csv(csv_path)


def select(cells, model=None, task=None, experiment=None, methods=None):
    """Cells matching every filter given (None matches anything)."""
    out = []
    for c in cells:
        if model and c.model != model and os.path.basename(str(c.model).rstrip("/")) != model:
            continue
        if task and c.task != task:
            continue
        if experiment and c.experiment != experiment:
            continue
        if methods and c.method not in methods:
            continue
        out.append(c)
    return out


def describe_filters(model=None, task=None, experiment=None, methods=None):
    parts = [f"{k}={v}" for k, v in (("model", model), ("task", task), ("experiment", experiment)) if v]
    if methods:
        parts.append("method=" + ",".join(methods))
    return " and ".join(parts)
