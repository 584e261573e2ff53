"""Paper presets (``configs/*.yaml``): params overrides merged over params.yaml.

    python -m ltcl.presets configs/kdup_cifar10_lt.yaml    # -> -S key=value ... for dvc exp run
    python -m ltcl.presets configs/x.yaml --write          # merge into params.yaml (validated)
    ltcl preset run configs/x.yaml --seeds 5 --queue       # dvc exp run --queue, one per seed / split
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from ltcl.compare.experiments import flatten
from ltcl.compare.queue import merged, repeats, set_param_args
from ltcl.errors import UserError


def load_preset(path: str | Path) -> dict[str, Any]:
    """The preset as flat ``section.key -> value`` overrides."""
    raw = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a preset is a mapping of params sections")
    return flatten(raw)


def validated(path: str | Path, user: dict[str, Any] | None = None,
              params_file: str | Path = "params.yaml") -> tuple[dict[str, Any], dict]:
    """The preset's flat overrides and the full params (nested): params.yaml, then the preset,
    then ``user`` overrides; validated (ParamsError names the preset)."""
    from ltcl.params import read_yaml, validate

    over = load_preset(path)
    full = merged(merged(read_yaml(params_file), over), user or {})
    validate(full, path=f"{path} over {params_file}" + (" and -S" if user else ""))
    return over, full


def parse_set_params(items: list[str]) -> dict[str, Any]:
    """``key=value`` strings (``-S`` arguments) as ``{key: value}``, values read as YAML as DVC does."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"-S {item!r}: expected key=value, e.g. -S pretrain.seed=1")
        out[key.strip()] = yaml.safe_load(value)
    return out


def default_name(path: str | Path) -> str:
    """Experiment name of a preset file: ``configs/kdup_cifar10_lt.yaml`` -> ``kdup-cifar10-lt``."""
    return Path(path).stem.replace("_", "-")


def run_plan(path: str | Path, seeds: int | None = None, name: str | None = None, queue: bool = False,
             user_args: list[str] | None = None,
             params_file: str | Path = "params.yaml") -> list[tuple[str, list[str]]]:
    """(what the experiment runs, its ``dvc exp run`` argv) of each experiment of a preset.

    The argv holds the preset's ``-S`` args, the repeat's seed / split overrides (``--seeds N``:
    experiments NAME-s1..sN, as ``ltcl queue`` varies seeds), then the user's ``-S`` args last (later
    -S win in DVC).  The description (:func:`ltcl.released_code.describe` of the experiment's
    validated params) names the row, its projection head, TS's period or TASE's schedule, the
    pruned branch and COLT's domain term, with a note where one is not what the authors' code runs."""
    from ltcl.params import validate
    from ltcl.released_code import describe

    user_args = list(user_args or [])
    user_over = parse_set_params(user_args)
    over, full = validated(path, user_over, params_file)
    name = name or default_name(path)
    runs = [(name, {})] if seeds is None else [(f"{name}-s{k}", rep) for k, rep in enumerate(repeats(full, seeds), 1)]
    head = ["dvc", "exp", "run", *(["--queue"] if queue else [])]
    user = [a for item in user_args for a in ("-S", item)]
    return [(f"{exp}: {describe(validate(merged(merged(full, rep), user_over), path=path))}",
             [*head, "-n", exp, *set_param_args({**over, **rep}), *user]) for exp, rep in runs]


def run_commands_for(path: str | Path, seeds: int | None = None, name: str | None = None, queue: bool = False,
                     user_args: list[str] | None = None, params_file: str | Path = "params.yaml") -> list[list[str]]:
    """The ``dvc exp run`` argv lists of a preset's experiments (:func:`run_plan`)."""
    return [cmd for _, cmd in run_plan(path, seeds, name, queue, user_args, params_file)]


def main(argv=None) -> int:
    from ltcl.params import ParamsError

    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(__doc__)
        return 2
    try:
        over, full = validated(argv[0])
    except ParamsError as exc:
        print(exc, file=sys.stderr)  # names the preset (or params.yaml when that is unreadable)
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
