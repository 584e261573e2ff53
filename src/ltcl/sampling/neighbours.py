"""Exact cosine k-nearest neighbours with faiss, globally or within each domain."""

from __future__ import annotations

import faiss
import numpy as np
import torch


def knn_indices(z, k: int, exclude_self: bool = True) -> np.ndarray:
    """Indices (N, k) of each row's k nearest rows by cosine (rows L2-normalised here).

    faiss ``IndexFlatIP`` is exact; ``exclude_self`` drops the query itself even when
    duplicates tie with it (we search k + 1 and remove the row's own index)."""
    x = np.ascontiguousarray(_as_numpy(z), dtype=np.float32)
    n = len(x)
    extra = 1 if exclude_self else 0
    if k + extra > n:
        raise ValueError(f"k={k} nearest neighbours need at least {k + extra} samples, got {n}")
    faiss.normalize_L2(x)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    _, nn = index.search(x, k + extra)
    if not exclude_self:
        return nn.astype(np.int64)
    own = nn == np.arange(n)[:, None]
    # rows where self was not returned (exact duplicates): drop the last column instead
    own[~own.any(1), -1] = True
    return nn[~own].reshape(n, k).astype(np.int64)


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
