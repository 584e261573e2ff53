"""Exact cosine k-nearest neighbours with faiss, globally or within each domain."""

from __future__ import annotations

import numpy as np
import torch

from ltcl.sampling.tailness import knn_excluding_self


def knn_indices(z, k: int) -> np.ndarray:
    """Indices (N, k) of each row's k nearest other rows by cosine (exact, faiss); the one
    implementation is ``ltcl.sampling.tailness.knn_excluding_self`` (Eq. 4 uses it too)."""
    return knn_excluding_self(_as_numpy(z), k)


def domain_knn(z, domain, k: int) -> torch.Tensor:
    """k nearest neighbours of each sample among samples of its own domain (paper 003,
    Sec. 3.1.2: "The nearest neighbors ... are selected among the samples within the
    instance's domain").  A domain with k or fewer samples uses all of its other members,
    padded by repeating them (and the sample itself when it is alone)."""
    z = _as_numpy(z)
    domain = _as_numpy(domain).astype(np.int64)
    out = np.empty((len(z), k), dtype=np.int64)
    for d in np.unique(domain):
        members = np.flatnonzero(domain == d)
        if len(members) > k:
            out[members] = members[knn_indices(z[members], k)]
        else:
            for row, i in enumerate(members):
                others = np.delete(members, row) if len(members) > 1 else members
                out[i] = np.resize(others, k)
    return torch.from_numpy(out)


def _as_numpy(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)
