"""Paper presets (``configs/*.yaml``): params overrides merged over params.yaml.

    python -m ltcl.presets configs/kdup_cifar10_lt.yaml    # -> -S key=value ... for dvc exp run
    python -m ltcl.presets configs/x.yaml --write          # merge into params.yaml (validated)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from ltcl.compare.experiments import flatten
from ltcl.errors import UserError


def load_preset(path: str | Path) -> dict[str, Any]:
    """The preset as flat ``section.key -> value`` overrides."""
    raw = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a preset is a mapping of params sections")
    return flatten(raw)


def merged(params: dict, overrides: dict[str, Any]) -> dict:
    """``params`` (nested) with flat overrides applied; unknown sections are created (and then
    refused by validation)."""
    import copy

    out = copy.deepcopy(params)
    for key, v in overrides.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return out


def main(argv=None) -> int:
    from ltcl.compare.queue import set_param_args
    from ltcl.params import ParamsError, read_yaml, validate

    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(__doc__)
        return 2
    over = load_preset(argv[0])
    full = merged(read_yaml("params.yaml"), over)
    try:
        validate(full)
    except ParamsError as exc:
        print(f"{argv[0]}: {exc}", file=sys.stderr)
        return 2
    if "--write" in argv:
        from ltcl.io import write_text

        write_text("params.yaml", yaml.safe_dump(full, sort_keys=False))
        print(f"params.yaml updated from {argv[0]}")
    else:
        import shlex

        print(shlex.join(set_param_args(over)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
