"""export@<encoder>: the encoder as backbone-only safetensors in torchvision's key layout, plus a
model card (Markdown and JSON).

Usage: python stages/export.py <encoder>   (encoder = pretrain | distill)
Reads no params (the card takes the params stored in the checkpoint).  Reads data/models/<encoder>.pt,
metrics/probe/<encoder>_details.json, metrics/probe/ref-{pixels,random}_details.json, metrics/pretrain.json,
metrics/<encoder>.json, data/lt/manifest.json.  Writes export/<encoder>/ (encoder.safetensors,
model_card.json, model_card.md).
"""

import sys

from ltcl.pipeline import export
from ltcl.stage import run_stage

encoder = sys.argv[1] if len(sys.argv) > 1 else "distill"
OUT = f"export/{encoder}"


def main() -> None:
    export.run(encoder, f"data/models/{encoder}.pt", f"metrics/probe/{encoder}_details.json", "metrics", "data/lt",
               OUT)


if __name__ == "__main__":
    run_stage(f"export@{encoder}", main, outputs=[OUT])
