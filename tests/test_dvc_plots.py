"""Every plot dvc.yaml declares, checked against the DVC template it uses (issue 22).

The templates are DVC's own (``dvc_render.vega_templates``): for each declared plot the x / y
fields must exist in the file its stage writes (the committed files in metrics/ and dvclive/),
and for a bar template the bar length (the template's quantitative channel) must be a numeric
count, not the rank, with the category (the nominal channel) naming one bar per row.  The class
counts are also rendered by the real ``dvc plots show --json`` (about 2 s, no network) and the
head class must get the longest bar."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dvc_render.vega_templates import TEMPLATES

REPO = Path(__file__).resolve().parents[1]
DVC_YAML = yaml.safe_load((REPO / "dvc.yaml").read_text())
BUILTIN = {t.DEFAULT_NAME: t.DEFAULT_CONTENT for t in TEMPLATES}


def template_content(name: str) -> dict:
    """A template's Vega-Lite content: a DVC built-in, or the project's own ``.dvc/plots/<name>.json``
    (where DVC looks for custom templates), or a template file named by its path."""
    for path in (REPO / ".dvc/plots" / f"{name}.json", REPO / ".dvc/plots" / name, REPO / name):
        if path.is_file():
            return json.loads(path.read_text())
    return BUILTIN.get(name, {})
DEFAULT_TEMPLATE = "linear"  # DVC's default when a plot names none
CLASS_COUNTS = "metrics/class_counts.csv"


def _entries(plots) -> list[tuple[str, dict]]:
    """A ``plots:`` list (a stage's or the top-level one) as (path or id, properties)."""
    out = []
    for entry in plots or []:
        if isinstance(entry, str):
            out.append((entry, {}))
        else:
            out.extend((k, dict(v or {})) for k, v in entry.items())
    return out


def declared_plots() -> list[tuple[str, str, dict]]:
    """(owner, path or id, properties) for every plot of dvc.yaml, foreach stages expanded."""
    found = []
    for name, stage in (DVC_YAML.get("stages") or {}).items():
        if "foreach" in stage:
            items = stage["foreach"]
            keys = items if isinstance(items, list) else list(items)
            for key in keys:
                for path, props in _entries(stage["do"].get("plots")):
                    path = path.replace("${item}", str(key)).replace("${key}", str(key))
                    found.append((f"{name}@{key}", path, props))
        else:
            found.extend((name, path, props) for path, props in _entries(stage.get("plots")))
    found.extend(("plots", path, props) for path, props in _entries(DVC_YAML.get("plots")))
    return found


def _fields(spec, props: dict, path: str) -> list[tuple[str, str]]:
    """(file, field) pairs a property (x or y) names: a string (the plot's own file or files),
    a {file: field or [fields]} mapping (top-level plots), or absent."""
    if spec is None:
        return []
    if isinstance(spec, str):
        return [(path, spec)]
    return [(f, fld) for f, v in spec.items() for fld in ([v] if isinstance(v, str) else v)]


def read_table(path: Path) -> tuple[list[str], list[dict]]:
    """Columns and rows of a plot file, read the way DVC reads it (csv / tsv via DictReader,
    json / yaml as a list of records)."""
    text = path.read_text()
    if path.suffix in (".csv", ".tsv"):
        reader = csv.DictReader(io.StringIO(text), delimiter="\t" if path.suffix == ".tsv" else ",")
        rows = list(reader)
        return list(reader.fieldnames or []), rows
    data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    if isinstance(data, dict):  # {"key": [records]}: DVC takes the first list
        data = next((v for v in data.values() if isinstance(v, list)), [])
    cols = sorted({k for row in data for k in row})
    return cols, data


def plot_files(path: str) -> list[Path]:
    p = REPO / path
    return sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]


def _encoding(content: dict) -> dict:
    """The encoding of a template (its first layer's, for layered ones)."""
    if "encoding" in content:
        return content["encoding"]
    for part in content.get("layer", []) + [content.get("spec", {})]:
        if isinstance(part, dict) and _encoding(part):
            return _encoding(part)
    return {}


def _mark(content: dict) -> str:
    mark = content.get("mark") or content.get("spec", {}).get("mark") or {}
    return mark.get("type") if isinstance(mark, dict) else mark


def bar_axes(content: dict, x_field: str = "<DVC_METRIC_X>", y_field: str = "<DVC_METRIC_Y>"):
    """For a bar chart (template or rendered spec): (length channel, category channel), the
    quantitative and the nominal one of x / y; None for any other chart."""
    if _mark(content) != "bar":
        return None
    enc = _encoding(content)
    types = {ch: enc.get(ch, {}).get("type") for ch in ("x", "y")}
    if sorted(types.values()) != ["nominal", "quantitative"]:
        return None
    length = next(ch for ch, t in types.items() if t == "quantitative")
    return length, "y" if length == "x" else "x"


PLOTS = declared_plots()
BAR_PLOTS = [p for p in PLOTS if bar_axes(template_content(p[2].get("template", DEFAULT_TEMPLATE)))]


def _id(p):
    return f"{p[0]}:{p[1]}"


def test_dvc_yaml_declares_the_class_count_bar_plot():
    assert CLASS_COUNTS in [p[1] for p in BAR_PLOTS], "the class-count plot is a horizontal bar chart"


@pytest.mark.parametrize("plot", PLOTS, ids=_id)
def test_declared_fields_exist_in_the_written_files(plot):
    owner, path, props = plot
    template = props.get("template", DEFAULT_TEMPLATE)
    assert template_content(template), \
        f"{owner}: template {template!r} is neither a DVC built-in ({sorted(BUILTIN)}) nor a file in .dvc/plots/"
    if owner != "plots" or (REPO / path).exists():  # a top-level plot may be an id, its files in x / y
        assert (REPO / path).exists(), f"{owner}: {path} is not in the repository"
    files = plot_files(path) if (REPO / path).exists() else []
    for key in ("x", "y"):
        for file, field in _fields(props.get(key), props, path):
            for f in (plot_files(file) if file != path else files):
                assert f.is_file(), f"{owner}: {f.relative_to(REPO)} is not in the repository"
                cols, _ = read_table(f)
                assert field in cols, f"{owner}: {key}: {field!r} is not a column of {f.relative_to(REPO)} ({cols})"


def _is_number(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


@pytest.mark.parametrize("plot", BAR_PLOTS, ids=_id)
def test_bar_length_is_the_count_not_the_rank(plot):
    owner, path, props = plot
    template = props.get("template", DEFAULT_TEMPLATE)
    length_ch, category_ch = bar_axes(template_content(template))
    length, category = props.get(length_ch), props.get(category_ch)
    assert isinstance(length, str) and isinstance(category, str), \
        f"{owner}: {template} needs {length_ch} (bar length) and {category_ch} (category) fields"
    for f in plot_files(path):
        _, rows = read_table(f)
        values = [r[length] for r in rows if r.get(length) not in (None, "")]  # an unlabeled set: empty counts
        assert all(_is_number(v) for v in values), \
            f"{owner}: {template}'s bar length {length_ch}={length!r} is not numeric"
        nums = [float(v) for v in values]
        assert length != "rank" and nums != [float(i) for i in range(len(nums))], \
            f"{owner}: {template}'s bar length {length_ch}={length!r} is the row index " \
            "(the head class's bar is zero-length)"
        cats = [r.get(category) for r in rows]
        assert len(set(cats)) == len(cats), f"{owner}: category {category_ch}={category!r} repeats: bars would merge"
        if path == CLASS_COUNTS and nums:
            assert length in ("count", "lt_count"), f"{owner}: bar length {length!r} is not a count column"
            head = next(r for r in rows if r["rank"] == "0")
            assert float(head[length]) == max(nums) > 0, f"{owner}: the head class does not get the longest bar"


def test_class_count_fields_exist_for_an_unlabeled_collection(tmp_path):
    """The header-only and the empty-count forms of the file still have the declared fields."""
    from ltcl.pipeline.make_lt_dataset import write_class_counts

    props = next(p[2] for p in PLOTS if p[1] == CLASS_COUNTS)
    for manifest in ({"class_names": []}, {"class_names": ["a", "b"]}):
        out = tmp_path / "class_counts.csv"
        write_class_counts(manifest, out)
        cols, rows = read_table(out)
        assert {props.get("x"), props.get("y")} <= set(cols), (manifest, cols)
        assert len(rows) == len(manifest["class_names"])


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """``dvc plots show --json`` of a copy of dvc.yaml, params.yaml, .dvc/plots/ and the committed plot files."""
    root = tmp_path_factory.mktemp("plots")
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, root / name)
    for _, path, _ in PLOTS:
        for f in plot_files(path):
            dst = root / f.relative_to(REPO)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, dst)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    run = lambda *a: subprocess.run([sys.executable, "-m", "dvc", *a], cwd=root, env=env,  # noqa: E731
                                    capture_output=True, text=True, timeout=120, check=True)
    run("init", "--no-scm", "-q")
    if (REPO / ".dvc/plots").is_dir():  # the project's own templates
        shutil.copytree(REPO / ".dvc/plots", root / ".dvc/plots")
    return json.loads(run("plots", "show", "--json").stdout)["data"]


def test_rendered_class_counts_head_class_gets_the_longest_bar(rendered):
    spec = rendered[CLASS_COUNTS][0]["content"]
    axes = bar_axes(spec)
    assert axes, f"the class-count plot is not rendered as a bar chart: {_encoding(spec)}"
    enc = _encoding(spec)
    length, category = enc[axes[0]]["field"], enc[axes[1]]["field"]
    rows = spec["data"]["values"]
    head = next(r for r in rows if r["rank"] == "0")
    lengths = [float(r[length]) for r in rows]
    assert length != "rank" and float(head[length]) == max(lengths) > 0, \
        f"rendered bar length is {length!r}: the head class's bar is {head[length]}, the longest {max(lengths)}"
    assert len({r[category] for r in rows}) == len(rows), f"rendered category {category!r} repeats"


def test_rendered_class_counts_bars_start_at_zero(rendered):
    spec = rendered[CLASS_COUNTS][0]["content"]
    enc = _encoding(spec)
    length_ch = bar_axes(spec)[0]
    assert enc[length_ch].get("scale", {}).get("zero", True) is not False
