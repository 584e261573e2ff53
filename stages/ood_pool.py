"""ood-pool: prepare the OOD image pool once per pool parameter set (DVC caches it).

Reads params: ood.source, ood.path, ood.root, ood.pool_source, ood.pool_size, ood.pool_seed,
ood.crop_scale; data/lt/image.json.
Writes: data/ood/pool.npy (uint8 N x H x W x C, memory-mappable), matched to the ID images'
size and channels, and data/ood/pool.json (its sha256, shape, dtype and pool parameters, which
ood-sampling and pretrain check the pool against; for a folder pool also the files used, the
crops each gave and the files skipped).
"""

from ltcl.params import load_params
from ltcl.pipeline import ood_pool
from ltcl.stage import run_stage

OUT = "data/ood/pool.npy"
MANIFEST = "data/ood/pool.json"  # written by ltcl.pipeline.ood_pool.run beside the pool


def main() -> None:
    ood_pool.run(load_params().ood, "data/lt", OUT)


if __name__ == "__main__":
    run_stage("ood-pool", main, outputs=[OUT, MANIFEST])
