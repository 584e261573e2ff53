"""Defaults live only in the params schema (ltcl.params): no library code restates one.

Read from the source (AST), not by running it: for every params key that has a schema default, no
function in src/ltcl has a keyword parameter of that name (or of a name the key travels under,
RENAMED) with a literal default, and no ``getattr(obj, "<key>", <literal>)`` stands in for the
params.  Where such a name is a different quantity than the params key, ALLOWED says why.
"""

from __future__ import annotations

import ast
from pathlib import Path

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from ltcl.params import Params

SRC = Path(__file__).resolve().parents[1] / "src" / "ltcl"

# keyword names under which a params key reaches library functions
RENAMED = {
    "refresh_every": "ood.interval",
    "tol": "ood.cluster_tol",
    "max_iter": "ood.cluster_max_iter",
    "patience": "ood.cluster_patience",
}
_CHUNK = "chunk size of a no-grad pass over a whole set: memory only, the outputs do not depend on it"
_DEVICE = ("the torch device a library call puts tensors on (callers pass the stage's resolved runtime.device); "
           "not runtime.device, whose 'auto' is resolved first")
_ROOT = "the repository root the stage runs in, not data.root / ood.root"
# (file relative to src/ltcl, function, keyword) -> why its default is not a params default
ALLOWED = {
    ("compare/render.py", "html_page", "title"): "the comparison page's own title; report.title titles the report",
    ("embed.py", "embed", "batch_size"): "`ltcl embed --batch-size`: the command's own option (it reads no params)",
    ("embed.py", "embed", "device"): "`ltcl embed --device`: the command's own option (it reads no params)",
    ("embed.py", "embed", "amp"): "`ltcl embed --amp`: the command's own option (it reads no params)",
    ("models/features.py", "extract_features", "batch_size"): _CHUNK,
    ("models/features.py", "extract_features", "device"): _DEVICE,
    ("models/features.py", "extract_features", "amp"): "a library call's precision switch; the stages pass runtime's "
                                                     "resolved precision",
    ("eval/probe.py", "train_linear_probe", "device"): _DEVICE,
    ("eval/protocols.py", "encoder_features", "batch_size"): _CHUNK,
    ("eval/protocols.py", "evaluate_features", "device"): _DEVICE,
    ("losses/gml.py", "__init__", "device"): _DEVICE,
    ("models/checkpoint.py", "load_encoder", "device"): _DEVICE,
    ("models/export.py", "load_export", "device"): _DEVICE,
    ("models/features.py", "embed_images", "batch_size"): _CHUNK + " (the sampling stage passes ood.embed_batch_size)",
    ("losses/bcl.py", "randaugment_draws", "views"): "SimCLR's two views a step draws RandAugment ops for, not "
                                                     "ood.mak.views (MAK's augmented embeddings per pool image)",
    ("pipeline/report.py", "run", "root"): _ROOT,
    ("report/html.py", "build_report", "root"): _ROOT,
    ("runrecord.py", "run_record_path", "root"): _ROOT,
}


def _schema_keys(model: type[BaseModel], prefix: str = "", out: dict | None = None) -> dict[str, list[str]]:
    """params key name -> the dotted keys of that name that have a schema default."""
    out = {} if out is None else out
    for name, field in model.model_fields.items():
        key = field.alias or name
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            _schema_keys(ann, f"{prefix}{key}.", out)
        elif field.default is not PydanticUndefined or field.default_factory is not None:
            out.setdefault(key, []).append(prefix + key)
    return out


KEYS = _schema_keys(Params)


def _literal(node: ast.AST | None) -> bool:
    """A constant other than None (None means "not given", never a restated value), or a tuple /
    list of constants, or a negative number."""
    if isinstance(node, ast.Constant):
        return node.value is not None
    if isinstance(node, (ast.Tuple, ast.List)):
        return bool(node.elts) and all(_literal(e) for e in node.elts)
    return isinstance(node, ast.UnaryOp) and _literal(node.operand)


def restated_defaults(source: str, rel: str) -> list[str]:
    """Every keyword default and getattr default in ``source`` that restates a params default."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            positional = args.posonlyargs + args.args
            pairs = list(zip(positional[len(positional) - len(args.defaults):], args.defaults))
            pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
            for arg, default in pairs:
                key = KEYS.get(arg.arg) or ([RENAMED[arg.arg]] if arg.arg in RENAMED else None)
                if key and _literal(default) and (rel, node.name, arg.arg) not in ALLOWED:
                    found.append((node.lineno, f"{rel}:{node.lineno} {node.name}({arg.arg}={ast.unparse(default)}) "
                                               f"restates {' / '.join(key)}"))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
              and len(node.args) == 3 and isinstance(node.args[1], ast.Constant)
              and (node.args[1].value in KEYS or node.args[1].value in RENAMED) and _literal(node.args[2])):
            found.append((node.lineno, f"{rel}:{node.lineno} getattr(..., {node.args[1].value!r}, "
                                       f"{ast.unparse(node.args[2])}) restates a params default: read the params"))
    return [msg for _, msg in sorted(found)]


def test_no_library_function_restates_a_params_default():
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel in ("params.py", "method_params.py"):  # the schema itself
            continue
        found += restated_defaults(path.read_text(), rel)
    assert not found, "defaults restated outside the schema (ltcl.params):\n" + "\n".join(found)


def test_every_allowance_is_still_needed():
    """An allowance whose function or keyword is gone (or no longer has a literal default) is removed."""
    stale = []
    for rel, fn, kw in ALLOWED:
        tree = ast.parse((SRC / rel).read_text())
        hits = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == fn
                and any(a.arg == kw for a in n.args.posonlyargs + n.args.args + n.args.kwonlyargs)]
        if not hits:
            stale.append((rel, fn, kw))
    assert not stale, f"allowances without their function / keyword: {stale}"


def test_the_guard_sees_what_it_forbids():
    """The check catches each form it forbids (and a renamed key), and passes what it allows."""
    bad = '''
def a(x, temperature=0.2): ...
def b(*, seed=0): ...
def c(cfg): return getattr(cfg, "alpha", 0.0)
class M:
    def __init__(self, refresh_every=25): ...
def d(x, flip=(True,)): ...
'''
    found = restated_defaults(bad, "x.py")
    assert [f.split(" ", 1)[1].split(" restates")[0] for f in found] == [
        "a(temperature=0.2)", "b(seed=0)", "getattr(..., 'alpha', 0.0)", "__init__(refresh_every=25)",
        "d(flip=(True,))"]
    assert "pretrain.temperature" in found[0] and "ood.interval" in found[3]
    ok = '''
def a(x, temperature, seed=None, n_init=10): ...
def b(cfg): return cfg.alpha, getattr(cfg, "alpha"), getattr(cfg, "backbone", cfg)
'''
    assert restated_defaults(ok, "x.py") == []
