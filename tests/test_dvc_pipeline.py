"""The DVC contract: a full `dvc repro` of the KDUP chain on tiny params, a no-op second repro,
code edits that invalidate exactly the stages that run the code, a probe parameter experiment
that reruns only linear-probe and report, a distillation experiment, ``ltcl compare``'s table from
the real ``dvc exp show --json`` of the experiments, and a team's promises (run cache, exp apply,
keys a method never reads, another machine's precision, clone + pull).

Every stage here runs in its own process (the point of the test), about 5 s of interpreter and
imports each, so the test runs what only DVC can show with real stage runs (the first repro, two
experiments, the run cache, a clone) and states which stages a params edit makes stale with
``dvc status`` where running them would show nothing more.  The two tests share one pipeline and
run in order, in one xdist worker (the group below)."""

from __future__ import annotations

import json
import re

import pytest

from conftest import make_project

# Test-local: every stage runs in its own process here (the point of the test), so each one is
# kept as cheap as the assertions allow; none of them depends on the t-SNE sample count (the
# cluster stage's cost: 1000 Barnes-Hut iterations).
SMALLER = {"cluster": {"tsne_samples": 10}}
pytestmark = pytest.mark.xdist_group("dvc-pipeline")  # one worker: the tests share the pipeline, in order
ALWAYS = {"runtime"}  # always_changed: it records this machine's precision and threads in every repro


@pytest.fixture(scope="module")
def dvc_project(tmp_path_factory):
    proj = make_project(tmp_path_factory.mktemp("dvc"), {
        **SMALLER, "ood": {"strategy": "kdup"}, "pretrain": {"method": "psd", "epochs": 3},
        "distill": {"method": "kdup"}}, git=True)
    proj.run("git", "add", "-A")
    proj.run("git", "commit", "-qm", "init")
    return proj


def stale_stages(p) -> set[str]:
    return set(json.loads(p.dvc("status", "--json").stdout))


def test_repro_then_noop_then_probe_experiment(dvc_project):
    p = dvc_project
    first = p.dvc("repro")
    for stage in ("runtime", "make-lt-dataset", "ood-pool", "ood-sampling", "pretrain", "distill", "linear-probe@pretrain",
                  "linear-probe@distill", "reference-probe-pixels", "reference-probe-random", "cluster@pretrain",
                  "cluster@distill", "export@pretrain", "export@distill", "report"):
        assert f"Running stage '{stage}'" in first.stdout
    assert p.path("report/index.html").exists()
    p.run("git", "add", "-A")
    p.run("git", "commit", "-qm", "baseline run")

    again = p.dvc("repro")  # the runtime stage always runs (a second); its record is unchanged, so nothing else
    assert ran_stages(again) == ALWAYS

    # code deps are exact (issue 12): a loss only GML uses changes nothing of the KDUP chain; KDUP's
    # own loss module invalidates the stages that run it (and so everything after them)
    kdup_chain = {"ood-sampling", "pretrain", "distill"}
    for rel, invalid in (("src/ltcl/losses/gml.py", set()), ("src/ltcl/losses/kdup.py", kdup_chain)):
        path = p.path(rel)
        text = path.read_text()
        path.write_text(text + "\n# an edit\n")
        status = json.loads(p.dvc("status", "--json").stdout)
        path.write_text(text)
        assert {s for s in status if "changed deps" in str(status[s])} & (kdup_chain | {"make-lt-dataset"}) == invalid

    # which of SDCLR's splits (issue 14) and the split seed are read by make-lt-dataset alone (the
    # status lists nothing else: the code edits above were undone); the stages after it rerun only
    # through its outputs, and ood-pool, which reads data/lt/image.json only, keeps its pool when a
    # new split of the same images is made (the stage run by hand, as DVC would)
    params_text = p.path("params.yaml").read_text()
    p.set_params({"data": {"split_index": 3, "split_seed": 5}})
    status = json.loads(p.dvc("status", "--json").stdout)
    assert set(status) - {"report"} - ALWAYS == {"make-lt-dataset"}  # the report prints the data params
    assert "'data': 'modified'" in str(status["make-lt-dataset"])  # it reads the whole data section
    p.stage("make_lt_dataset.py")
    stale = set(json.loads(p.dvc("status", "--json").stdout))
    p.path("params.yaml").write_text(params_text)
    assert {"ood-sampling", "pretrain", "linear-probe@pretrain"} <= stale and "ood-pool" not in stale
    back = p.dvc("repro").stdout  # the baseline's split again (from DVC's run cache): nothing after it reruns
    assert set(re.findall(r"Running stage '([^']+)'", back)) <= {"make-lt-dataset"} | ALWAYS, back

    before = json.loads(p.path("metrics/probe/pretrain.json").read_text())
    # The experiments target the report (everything but the exports, which the first repro ran):
    # each export@* run costs an interpreter and torch import, 6 of them ~20 s of the suite's budget.
    exp = p.dvc("exp", "run", "-S", "probe.lr=0.05", "-S", "probe.feature_norm=l2", "report")
    ran = {exp_name(exp): snapshot(p)}  # each experiment's own metrics files, read from the workspace it left
    # the reference rows (raw pixels, random init) run the same probe: they rerun with it
    assert ran_stages(exp) == {"linear-probe@pretrain", "linear-probe@distill", "reference-probe-pixels",
                               "reference-probe-random", "report"} | ALWAYS
    assert "export@pretrain" in stale_stages(p)  # the model cards quote the probe numbers: stale now
    after = json.loads(p.path("metrics/probe/pretrain.json").read_text())
    assert after != before
    diff = p.dvc("metrics", "diff", "--json")
    changed = json.loads(diff.stdout)
    assert "metrics/probe/pretrain.json" in changed
    assert any(k.startswith("full.") for k in changed["metrics/probe/pretrain.json"])

    # a distillation ablation (Table 6) reruns distill and what evaluates g, never f's stages; a
    # finished experiment (no target: the exports too, export@pretrain left stale by the probe
    # experiment above), the one test_team_promises applies
    exp = p.dvc("exp", "run", "-S", "distill.kdup.guided_weighting=false", "-S", "distill.kdup.beta=0.5")
    assert ran_stages(exp) == {"distill", "linear-probe@distill", "cluster@distill", "export@distill",
                               "export@pretrain", "report"} | ALWAYS
    p.finished_experiment = exp_name(exp)
    ran[exp_name(exp)] = snapshot(p)
    check_compare_on_exp_show(p, ran)

    # a PSD-only key (paper 003 Table 8's alpha) reruns pre-training, never the SimCLR warm-up:
    # `dvc status` names pretrain (and the report, which prints it), not ood-sampling; the stages
    # after pretrain rerun through its outputs (DVC's DAG, not a property of ltcl's dvc.yaml)
    params_text = p.path("params.yaml").read_text()
    p.set_params({"pretrain": {"alpha": 0.5}})
    status = json.loads(p.dvc("status", "--json").stdout)
    p.path("params.yaml").write_text(params_text)
    assert set(status) - ALWAYS == {"pretrain", "report"}, status
    assert "'pretrain.alpha': 'modified'" in str(status["pretrain"])


# the declared metrics (the headlines, ltcl.headline; metrics/pretrain.json and distill.json are no metrics)
COMPARED = ("probe/pretrain", "probe/distill", "cluster/pretrain", "cluster/distill", "ood")
VARIED = ("probe.lr", "probe.feature_norm", "distill.kdup.guided_weighting", "distill.kdup.beta")  # set by the experiments


def exp_name(proc) -> str:
    (name,) = re.findall(r"Ran experiment\(s\): (\S+)", proc.stdout)
    return name


def snapshot(p) -> dict:
    """The metrics files ltcl compare reads and the varied params, as this experiment left them."""
    metrics = {k: json.loads(p.path(f"metrics/{k}.json").read_text()) for k in COMPARED}
    # the training seconds ltcl compare reads: in the run records (runs/<stage>.json), not the metrics
    metrics["timings"] = {st: json.loads(p.path(f"runs/{st}.json").read_text())["timings"]
                          for st in ("ood-sampling", "pretrain", "distill")}
    params = p.params()

    def at(key: str):
        node = params
        for part in key.split("."):
            node = node[part]
        return node
    return {"metrics": metrics, "params": {k: at(k) for k in VARIED}}


def scalars(d: dict) -> dict:
    """``d`` without its lists and null values, as ``dvc exp show`` reports a metrics file."""
    return {k: scalars(v) if isinstance(v, dict) else v for k, v in d.items() if v is not None and not isinstance(v, list)}


def check_compare_on_exp_show(p, ran: dict) -> None:
    """``ltcl compare``'s table from the real ``dvc exp show --json`` of the two experiments: one
    f and one g line per experiment, named as paper 003 names KDUP, each column the number of that
    experiment's own metrics files (its probe, kNN, clusters and training time), one run each."""
    from ltcl.compare.experiments import from_exp_show
    from ltcl.compare.table import COLUMNS, build_lines

    exps = from_exp_show(json.loads(p.dvc("exp", "show", "--json").stdout), repo=p.root)  # run records: its git
    assert sorted(e.name for e in exps) == sorted(ran)
    for e in exps:
        for k in COMPARED:  # (dvc exp show leaves out lists and null values)
            assert e.metrics[k] == scalars(ran[e.name]["metrics"][k]), (e.name, k)
    # every experiment starts from the workspace the one before left: probe.lr and feature_norm stay
    # set, so what varies between the rows is the distillation's weighting and beta
    assert all(s["params"]["probe.lr"] == 0.05 and s["params"]["probe.feature_norm"] == "l2" for s in ran.values())
    lines, keys = build_lines(exps, "full")
    assert sorted(keys) == ["distill.kdup.beta", "distill.kdup.guided_weighting"]
    assert len(lines) == 4 and {l.label for l in lines} == {"SimCLR + KDUP (f)", "SimCLR + KDUP (g)"}
    for line in lines:
        (row,) = line.runs
        enc = "pretrain" if line.label.endswith("(f)") else "distill"
        assert row.encoder == enc
        snap = ran[row.experiment.name]
        assert line.params == {k: snap["params"][k] for k in keys}
        m = snap["metrics"]
        probe, cl = m[f"probe/{enc}"], m[f"cluster/{enc}"]
        t = m["timings"]
        minutes = (t["ood-sampling"]["warmup"]["seconds"] + t["pretrain"]["seconds"]
                   + (t["distill"]["seconds"] if enc == "distill" else 0.0)) / 60
        want = {**{k: probe["full"][k] for k in ("many", "medium", "few", "std", "all")},
                "knn1": probe["knn"]["k1"], "knn10": probe["knn"]["k10"], "chi": cl["chi"], "dbi": cl["dbi"],
                "minutes": minutes}
        assert set(want) == {k for k, _, _ in COLUMNS}
        assert line.mean == pytest.approx(want, rel=1e-12) and set(line.std.values()) == {0.0}
        assert set(line.n.values()) == {1}


def ran_stages(proc) -> set[str]:
    return {line.split("'")[1] for line in proc.stdout.splitlines() if line.startswith("Running stage")}


TORCH_STAGES = {"ood-sampling", "pretrain", "distill", "linear-probe@pretrain", "linear-probe@distill",
                "reference-probe-pixels", "reference-probe-random", "cluster@pretrain", "cluster@distill"}


def stale(p, cwd=None) -> dict:
    """``dvc status`` without the runtime stage, which is always run (and says so)."""
    status = json.loads((p.dvc("status", "--json") if cwd is None else cwd.dvc("status", "--json")).stdout)
    assert status.pop("runtime", ["always changed"]) == ["always changed"], status
    return status


def test_team_promises(dvc_project, tmp_path):
    """Issue 22, after the experiments above: ``dvc exp apply`` leaves nothing stale; the baseline's
    params again restore every stage from DVC's run cache (no training stage runs); a key the
    configured method never reads leaves every stage up to date; another machine's precision
    decision makes exactly the torch stages stale; and a teammate's clone + ``dvc pull`` is up to
    date, its ``dvc repro`` runs nothing but the runtime stage and leaves git clean."""
    from conftest import Project

    p = dvc_project
    name = p.finished_experiment  # the distillation experiment above, run to its end (the exports too)

    p.run("git", "checkout", "HEAD", "--", "params.yaml")  # the baseline's params, outputs of the experiments
    back = p.dvc("repro")
    assert ran_stages(back) == ALWAYS, back.stdout
    # the stages the experiments reran (f's training and the warm-up never changed: "didn't change")
    for st in ("distill", "linear-probe@pretrain", "linear-probe@distill", "export@distill"):
        assert f"Stage '{st}' is cached - skipping run, checking out outputs" in back.stdout, st
    assert stale(p) == {}

    p.dvc("exp", "apply", name)
    assert stale(p) == {} and p.params()["distill"]["kdup"]["guided_weighting"] is False
    assert not p.path("data/checkpoints").exists() or not any(p.path("data/checkpoints").iterdir())
    p.run("git", "add", "-A")
    p.run("git", "commit", "-qm", "the experiment applied")

    # psd (KDUP) reads none of GML's, TASE's or the GML student's keys, KDUP's sampling none of COLT's
    params_text = p.path("params.yaml").read_text()
    p.set_params({"pretrain": {"gml": {"scale": 20.0}, "tase": {"warmup": 3}}, "distill": {"gml": {"k": 512}},
                  "ood": {"colt": {"topk": 7}}})
    assert stale(p) == {}
    # a key psd reads: pretrain is stale (and the report, which prints it); `dvc status` names the
    # stages whose own deps changed, the rest follow pretrain's outputs when it reruns
    p.set_params({"pretrain": {"psd": {"k_pos": 2}}})
    assert set(stale(p)) == {"pretrain", "report"}
    assert '"pretrain.psd": "modified"' in json.dumps(stale(p)["pretrain"])  # the subsection DVC tracks
    p.path("params.yaml").write_text(params_text)

    # the runtime stage of a machine that resolves another precision (an AVX2 CPU with amp: auto)
    facts = p.path("data/runtime.json")
    mine = facts.read_text()
    facts.write_text(json.dumps({**json.loads(mine), "precision": "bf16" if '"fp32"' in mine else "fp32"}))
    status = json.loads(p.dvc("status", "--json").stdout)
    assert "data/runtime.json" in str(status.pop("runtime"))  # its output no longer what the lock says
    assert set(status) == TORCH_STAGES and all("data/runtime.json" in str(v) for v in status.values())
    assert ran_stages(p.dvc("repro", "runtime")) == {"runtime"}  # this machine's facts again: nothing else
    assert facts.read_text() == mine and stale(p) == {}

    # sharing: push to a remote, clone, pull
    remote = tmp_path / "remote"
    p.dvc("remote", "add", "-d", "team", str(remote))
    p.run("git", "add", "-A")
    p.run("git", "commit", "-qm", "remote")
    p.dvc("push")
    clone = Project(tmp_path / "clone")
    p.run("git", "clone", "-q", str(p.root), str(clone.root))
    clone.dvc("pull")
    assert stale(p, clone) == {}
    again = clone.dvc("repro")
    assert ran_stages(again) == {"runtime"}, again.stdout
    assert clone.run("git", "status", "--porcelain").stdout == ""
