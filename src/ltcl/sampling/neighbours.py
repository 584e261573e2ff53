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
    instance's domain").  Every domain needs more than k samples: a smaller one raises
    ValueError naming the domain and its size (``pretrain.psd.k_pos`` is k for PSD)."""
    z = _as_numpy(z)
    domain = _as_numpy(domain).astype(np.int64)
    out = np.empty((len(z), k), dtype=np.int64)
    domains, sizes = np.unique(domain, return_counts=True)
    small = [(int(d), int(n)) for d, n in zip(domains, sizes) if n <= k]
    if small:
        names = ", ".join(f"{'ID' if d == 0 else 'OOD' if d == 1 else d} domain has {n}" for d, n in small)
        raise ValueError(f"pretrain.psd.k_pos={k} nearest same-domain neighbours need more than {k} images in every "
                         f"domain, but the {names}; lower pretrain.psd.k_pos")
    for d in domains:
        members = np.flatnonzero(domain == d)
        out[members] = members[knn_indices(z[members], k)]
    return torch.from_numpy(out)


def _as_numpy(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)
