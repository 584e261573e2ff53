"""The params reference, docs/params.md, generated from the schema (:mod:`ltcl.params`): every
section and key of params.yaml with its type, default and description, and each method's
(strategy's) subsection under the registry entry's line.  ``ltcl deps --write`` writes it and
``ltcl deps`` reports it stale, so the page never states a default the code does not have.
"""

from __future__ import annotations

import json
import re
import types
import typing
from enum import Enum

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from ltcl.params import Params
from ltcl.registry import CHOICE, TABLES

PAGE = "docs/params.md"
HEAD = """# params.yaml reference

Generated from the schema (`src/ltcl/params.py`, `src/ltcl/method_params.py`, the registries in
`src/ltcl/registry.py`) by `ltcl deps --write`; `ltcl deps` fails while it differs. Defaults are
the schema's: a key left out of params.yaml takes them. Each stage's dvc.yaml entry lists the
keys it reads ([pipeline.md](pipeline.md)); a method's (strategy's) own keys sit in its
subsection, of which a stage reads only the configured one.
"""


def _type(annotation) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " | ".join(json.dumps(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type(a) for a in typing.get_args(annotation))
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type(a) for a in typing.get_args(annotation))}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


_BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def _bounds(field) -> str:
    """The range the schema enforces (``ge=1`` -> ``>= 1``)."""
    out = [f"{sign} {getattr(m, attr)}" for m in field.metadata for attr, sign in _BOUNDS.items()
           if getattr(m, attr, None) is not None]
    return f" ({', '.join(out)})" if out else ""


def _default(field) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "(required)"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "{...}"
    if isinstance(value, Enum):
        value = value.value
    return f"`{json.dumps(value, default=str)}`"


def _markdown(text: str) -> str:
    """A docstring's reST as Markdown: ``x`` and :role:`x` -> `x`."""
    return re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text or "").replace("``", "`")


def _cell(text: str) -> str:
    return " ".join((text or "").split()).replace("|", "\\|")


def _is_model(annotation) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _model_in(annotation) -> type[BaseModel] | None:
    """The model of a key whose value is a model, or a model or null (``LabeledParams | None``)."""
    if _is_model(annotation):
        return annotation
    models = [a for a in typing.get_args(annotation) if _is_model(a)]
    return models[0] if len(models) == 1 else None


def _table(model: type[BaseModel], prefix: str, skip: set[str]) -> tuple[list[str], list[tuple[str, type]]]:
    """Rows of ``model``'s plain keys and the nested models (name, model) to render after them."""
    rows, nested = [], []
    for name, f in model.model_fields.items():
        key = f.alias or name
        if key in skip:
            continue
        sub = _model_in(f.annotation)
        if sub is not None:
            nested.append((f"{prefix}.{key}", sub, f.description))
            if sub is not f.annotation:  # optional: its row says so, its keys follow
                rows.append(f"| `{prefix}.{key}` | {_cell(_type(f.annotation))} | {_default(f)} | "
                            f"{_cell(f.description)} (keys below) |")
            continue
        rows.append(f"| `{prefix}.{key}` | {_cell(_type(f.annotation) + _bounds(f))} | {_default(f)} | "
                    f"{_cell(f.description)} |")
    return rows, nested


def _render_model(model, prefix: str, about: str | None, out: list[str], level: int, skip=frozenset()) -> None:
    out.append(f"{'#' * level} `{prefix}`\n")
    doc = _markdown(about or (model.__doc__ or "").strip())
    if doc:
        out.append(" ".join(doc.split()) + "\n")
    rows, nested = _table(model, prefix, set(skip))
    if rows:
        out += ["| key | type | default | what |", "|---|---|---|---|", *rows, ""]
    elif not nested:
        out.append("No keys of its own.\n")
    for key, sub, description in nested:
        _render_model(sub, key, description, out, level + 1)


def render() -> str:
    """The whole page."""
    out = [HEAD]
    for section, f in Params.model_fields.items():
        model = f.annotation
        if not _is_model(model):  # external: a mapping of name -> encoder
            args = typing.get_args(model)
            out.append(f"## `{section}`\n\n{_cell(f.description)}: `{section}.<name>` is\n")
            _render_model(args[-1], f"{section}.<name>", None, out, 3)
            continue
        table = TABLES.get(section)
        subs = set(model.subsections()) if table else set()
        _render_model(model, section, None, out, 2, skip=subs)
        if table:
            out.append(f"### `{section}.<{CHOICE[section]}>`: one subsection per name of `ltcl.registry`\n")
            for name, entry in table.items():
                sub = model.model_fields[model.subsections()[name]].annotation
                _render_model(sub, f"{section}.{name}", entry.about, out, 4)
    return "\n".join(out).rstrip() + "\n"
