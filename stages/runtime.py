"""runtime: what the numbers depend on beyond params and inputs (issue 22).

Resolves ``runtime.device``, ``runtime.amp`` and ``runtime.threads`` on this machine (the device,
the precision ``amp: auto`` picks, the thread count: ``ltcl.runtime.runtime_facts``) and writes
them to data/runtime.json.  The stage always runs (``always_changed``); the file's bytes change
only when a decision does, and every torch stage depends on it, so ``dvc repro`` on a machine
that resolves another precision reruns the training stages instead of keeping numbers it would
not reproduce.  Reads params: runtime.  Writes: data/runtime.json.
"""

from ltcl.io import write_json
from ltcl.params import load_params
from ltcl.runtime import FACTS_FILE, runtime_facts
from ltcl.stage import run_stage


def main() -> None:
    facts = runtime_facts(load_params().runtime)
    write_json(FACTS_FILE, facts)
    print(f"ltcl runtime: {facts['device']}, {facts['precision']}, {facts['threads']} threads")


if __name__ == "__main__":
    # no run record (runs/runtime.json): this stage runs on every `dvc repro`, and a record that
    # changes each time would rewrite dvc.lock each time
    run_stage("runtime", main, outputs=[FACTS_FILE], record=False)
