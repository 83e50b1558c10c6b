"""Read and check a per-layer plan file (the YAML that calibration steps write).

    method: kvmix
    model: /path/to/model
    num_layers: 6
    calibration: {...}
    layers:
      - {layer: 0, k_bits: 2, v_bits: 4, k_score: 0.0123, v_score: 0.0456}
      ...

method, num_layers and layers are required; every layer has layer (its index, in order), k_bits and
v_bits (integers 1..16); k_score / v_score are optional numbers; other keys are allowed and kept.
Errors name the file, the line and the key.
"""

import os

from plot_common import PlotError

MAX_BITS = 16


class Plan:
    def __init__(self, path, method, model, layers):
        self.path, self.method, self.model, self.layers = path, method, model, layers  # layers: list of dicts

    def column(self, key):
        return [layer.get(key) for layer in self.layers]

    def has_scores(self):
        return all(isinstance(layer.get(k), (int, float)) for layer in self.layers for k in ("k_score", "v_score"))


def _yaml():
    try:
        import yaml
    except ImportError:
        raise PlotError("PyYAML is not installed for this Python (Debian: apt-get install python3-yaml, "
                        "or run scripts/setup.sh)")
    return yaml


def _line(tree, *path):
    """1-based line of the node at path (mapping keys / sequence indices) in a composed YAML tree;
    where a step is missing, the line of the deepest node found."""
    yaml = _yaml()
    node = tree
    for step in path:
        if isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            node = node.value[step]
        elif isinstance(node, yaml.MappingNode):
            found = [v for k, v in node.value if k.value == step]
            if not found:
                break
            node = found[0]
        else:
            break
    return node.start_mark.line + 1 if node is not None else 1


def load_plan(path):
    if not os.path.isfile(path):
        raise PlotError(f"plan file '{path}' does not exist")
    yaml = _yaml()
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        doc = yaml.safe_load(text)
        tree = yaml.compose(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else path
        raise PlotError(f"{where}: not valid YAML ({getattr(e, 'problem', None) or e})")

    def fail(message, *key_path):
        raise PlotError(f"{path}:{_line(tree, *key_path)}: {message}")

    if not isinstance(doc, dict):
        raise PlotError(f"{path}: a plan is a YAML mapping with keys method, num_layers, layers")
    for key in ("method", "num_layers", "layers"):
        if key not in doc:
            raise PlotError(f"{path}: missing key '{key}'")
    n = doc["num_layers"]
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        fail(f"num_layers: expected a positive integer, got '{n}'", "num_layers")
    layers = doc["layers"]
    if not isinstance(layers, list):
        fail("layers: expected a list of per-layer entries", "layers")
    if len(layers) != n:
        fail(f"layers: {len(layers)} entries but num_layers is {n}", "layers")
    for i, layer in enumerate(layers):
        where = f"layers[{i}]"
        if not isinstance(layer, dict):
            fail(f"{where}: expected a mapping like {{layer: {i}, k_bits: 2, v_bits: 2}}", "layers", i)
        for key in ("layer", "k_bits", "v_bits"):
            if key not in layer:
                fail(f"{where}: missing key '{key}'", "layers", i)
        if layer["layer"] != i:
            fail(f"{where}.layer: expected {i} (layers are listed in order), got '{layer['layer']}'", "layers", i, "layer")
        for key in ("k_bits", "v_bits"):
            b = layer[key]
            if not isinstance(b, int) or isinstance(b, bool) or not 1 <= b <= MAX_BITS:
                fail(f"{where}.{key}: expected an integer number of bits in 1..{MAX_BITS}, got '{b}'", "layers", i, key)
        for key in ("k_score", "v_score"):
            if key in layer and (not isinstance(layer[key], (int, float)) or isinstance(layer[key], bool)):
                fail(f"{where}.{key}: expected a number, got '{layer[key]}'", "layers", i, key)
    return Plan(path, str(doc["method"]), doc.get("model"), layers)


# One colour per bit width in every figure, light (few bits) to dark (many): 2, 3 and 4 bits, the
# widths mixed-precision plans choose between, get clearly different steps.
_BIT_COLOURS = {1: "#fee6ce", 2: "#fdae6b", 3: "#f16913", 4: "#a63603", 8: "#54278f", 16: "#252525"}


def bit_colours(plt, bits_values):
    """{bits: colour} for the widths given; widths outside the table take a shade of Oranges."""
    cmap = plt.get_cmap("Oranges")
    return {b: _BIT_COLOURS.get(b) or cmap(0.2 + 0.8 * min(b, MAX_BITS) / MAX_BITS) for b in bits_values}


def text_colour(colour):
    """Black or white, whichever reads on the background colour."""
    from matplotlib.colors import to_rgb
    r, g, b = to_rgb(colour)
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
