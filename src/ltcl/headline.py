"""A stage's result as two files: the headline (the DVC metrics file) and its details beside it.

``dvc exp show`` makes one column per key of every declared metrics file, so those files hold the
headline only (issue 22): per probe protocol Many / Medium / Few / STD / All and kNN
(``metrics/probe/<encoder>.json``), CHI and DBI (``metrics/cluster/<encoder>.json``), the OOD budget
(``metrics/ood.json``).  Everything the stage measured, the headline keys included (one file is
enough to read), goes to ``<name>_details.json`` beside it (``metrics/probe/pretrain_details.json``),
a git-tracked output that is no DVC metric.  The report, the model card and the study scripts read
the details; ``ltcl compare`` reads the headline through ``dvc exp show``.

Each stage computes one record and derives its headline from it with a view (a function of the
record: :func:`ltcl.eval.protocols.probe_headline`, :func:`ltcl.pipeline.cluster.cluster_headline`,
:func:`ltcl.sampling.selection_io.ood_headline`); :func:`write_metrics` writes both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from ltcl.io import PathLike, write_json

DETAILS_SUFFIX = "_details"


def details_path(path: PathLike) -> Path:
    """The details file beside the headline metrics file ``path``:
    ``metrics/probe/pretrain.json`` -> ``metrics/probe/pretrain_details.json``."""
    p = Path(path)
    return p.with_name(f"{p.stem}{DETAILS_SUFFIX}{p.suffix}")


def is_details(path: PathLike) -> bool:
    """Whether ``path`` names a details file (``<name>_details.json``), not a headline."""
    return Path(path).stem.endswith(DETAILS_SUFFIX)


def _keys_in_order(d: Any) -> Iterator[str]:
    if isinstance(d, dict):
        for k, v in d.items():
            yield k
            yield from _keys_in_order(v)


def write_metrics(path: PathLike, record: dict, headline: dict) -> None:
    """Write ``headline`` (a view of ``record``) to ``path`` and the whole ``record`` to
    :func:`details_path` (``path``).  Both keep the headline's keys in the order its view built them
    (protocols full, few_shot, ...; Many, Medium, Few, STD, All: ``dvc exp show``'s columns, in file
    order); every other key is sorted."""
    first = tuple(dict.fromkeys(_keys_in_order(headline)))
    write_json(details_path(path), record, first=first)
    write_json(path, headline, first=first)
