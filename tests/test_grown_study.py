"""A finished study that grows reruns only what is new: a seed more plans that seed's runs (and the report); a
changed distillation weight or temperature plans the distilled runs, not the teacher outputs; a term that takes a
new tensor from the teacher does recompute them."""

import json
import os
import re

import pytest
import yaml

from conftest import ROOT, job_counts, run_snakemake


def dry_run(workdir, config: dict, name: str) -> tuple[dict, str]:
    """Snakemake's plan for `config` (written beside the finished study's) over what the study left: {rule: jobs}
    and the printed plan. Not --forceall: what would run now."""
    path = workdir / name
    path.write_text(yaml.safe_dump(config))
    proc = run_snakemake(workdir, "-n", "--cores", "2", "--configfile", path)
    out = proc.stdout + proc.stderr
    return (job_counts(out) if "Job stats:" in out else {}), out


def planned(out: str, rule: str) -> list[str]:
    """The wildcards of each planned job of `rule`, as Snakemake prints them (`method=kl, seed=2`)."""
    blocks = re.split(r"\n(?=(?:local)?rule \w+:)", out)
    return sorted(
        m.group(1).strip()
        for b in blocks
        if re.match(rf"(?:local)?rule {rule}:", b.strip())
        for m in [re.search(r"wildcards: (.*)", b)]
        if m
    )


def study(tiny_study) -> tuple:
    workdir, config = tiny_study
    return workdir, yaml.safe_load(config.read_text())


def test_a_finished_study_plans_nothing(tiny_study):
    workdir, config = tiny_study
    proc = run_snakemake(workdir, "-n", "--cores", "2", "--configfile", config)
    out = proc.stdout + proc.stderr
    assert "Nothing to be done" in out or "Job stats:" not in out, out[-3000:]


def test_a_version_that_edits_every_script_plans_nothing_under_the_workflows_profiles(tiny_study):
    """A pulled version whose scripts are newer than the study's outputs (git gives a changed file the time of the
    checkout): under the workflow's profiles, which leave out Snakemake's `code` trigger, a finished study plans
    nothing; with that trigger every job would run again. The scripts' times are set back afterwards."""
    workdir, config = tiny_study
    scripts = sorted((ROOT / "workflow" / "scripts").glob("*.py"))
    times = {path: path.stat() for path in scripts}

    def dry_run(*args):
        return run_snakemake(workdir, "-n", "--configfile", config, *args).stdout

    for profile in ("default", "slurm"):
        triggers = yaml.safe_load((ROOT / "workflow" / "profiles" / profile / "config.yaml").read_text())
        assert "code" not in triggers["rerun-triggers"], profile
    try:
        for path in scripts:
            os.utime(path)  # now: after every output of the study
        out = dry_run("--workflow-profile", ROOT / "workflow" / "profiles" / "default")
        # The same plan with the code trigger on: every script job, down to the training runs.
        counts = job_counts(dry_run("--cores", "2"))
    finally:
        for path, st in times.items():
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert "Job stats:" not in out, out[-3000:]
    assert counts.get("train") == 3 and counts.get("distill") == 4, counts


def test_one_more_seed_plans_that_seeds_runs_only(tiny_study):
    workdir, cfg = study(tiny_study)
    cfg["seeds"] = [0, 1, 2]
    counts, out = dry_run(workdir, cfg, "grown.yaml")
    assert counts["train"] == 1 and counts["teacher_outputs"] == 1 and counts["distill"] == 2, counts
    assert planned(out, "train") == ["arm=student, seed=2"]
    assert planned(out, "teacher_outputs") == ["seed=2"]
    assert "distinct_teacher_outputs" not in counts, counts  # the table the seeds gather from depends on none
    assert planned(out, "distill") == ["method=kl, seed=2", "method=kl_cwd, seed=2"]
    assert "summary" in counts and "stats" in counts


def test_a_changed_weight_or_temperature_plans_the_distilled_runs_not_the_teacher_outputs(tiny_study):
    workdir, cfg = study(tiny_study)
    for field, value in (("weight", 5), ("temperature", 2)):
        changed = yaml.safe_load(yaml.safe_dump(cfg))
        changed["distill"]["kl_cwd"]["terms"][1][field] = value  # cwd_aspp
        counts, out = dry_run(workdir, changed, f"{field}.yaml")
        assert "teacher_outputs" not in counts and "train" not in counts, (field, counts)
        assert planned(out, "distill") == ["method=kl_cwd, seed=0", "method=kl_cwd, seed=1"], (field, counts)


def test_a_term_taking_another_teacher_tensor_recomputes_the_teacher_outputs(tiny_study):
    workdir, cfg = study(tiny_study)
    cfg["distill"]["kl_cwd"]["terms"][1].update(student="head.aspp", teacher="head")
    counts, _ = dry_run(workdir, cfg, "tensor.yaml")
    assert counts.get("teacher_outputs") == 2 and "train" not in counts, counts


ALL_DISTILLED = ["method=kl, seed=0", "method=kl, seed=1", "method=kl_cwd, seed=0", "method=kl_cwd, seed=1"]


def test_the_teacher_online_instead_of_cached_reruns_the_distilled_runs_in_one_pass(tiny_study):
    """The teacher's outputs computed in the run instead of read from the cache are rounded otherwise: every
    distilled run is planned in the first pass. The terms check does not rerun (if it did, Snakemake would not
    check the jobs downstream of it in that pass, and only a second `snakemake` would rerun the distilled runs)."""
    workdir, cfg = study(tiny_study)
    cfg["teacher"]["outputs"] = "online"
    counts, out = dry_run(workdir, cfg, "online.yaml")
    assert planned(out, "distill") == ALL_DISTILLED, counts
    assert not {"check_terms", "train", "teacher_outputs"} & set(counts), counts


def test_another_cache_dtype_recomputes_the_teacher_outputs_and_the_distilled_runs(tiny_study):
    workdir, cfg = study(tiny_study)
    cfg["cache"] = {"dtype": "bfloat16"}
    counts, out = dry_run(workdir, cfg, "bf16.yaml")
    assert planned(out, "teacher_outputs") == ["seed=0", "seed=1"], counts
    assert planned(out, "distill") == ALL_DISTILLED, counts
    assert not {"check_terms", "train", "distinct_teacher_outputs"} & set(counts), counts


def test_a_new_method_does_not_hide_another_change_of_the_same_edit(tiny_study):
    """A method added and the training runs' logging changed in one edit: both are planned in one pass (the
    students too, which nothing else reruns: they do not depend on the teacher)."""
    workdir, cfg = study(tiny_study)
    cfg["distill"]["kl1"] = {"terms": [{"name": "kl_logits", "loss": "kl", "weight": 1}]}
    cfg["train"]["log_iters"] = 2
    counts, out = dry_run(workdir, cfg, "method_and_train.yaml")
    assert planned(out, "train") == ["arm=student, seed=0", "arm=student, seed=1", "arm=teacher, seed=0"], counts
    assert "check_terms" not in counts, counts
    assert "method=kl1, seed=0" in planned(out, "distill"), counts


def test_what_the_teacher_stores_ignores_weights_and_temperatures():
    from segdistill.study import teacher_terms

    def reduced(terms_kl, extra=None):
        distill = {"kl": {"terms": None}, "kl_cwd": {"terms": terms_kl}, **(extra or {})}
        return teacher_terms({"distill": distill})

    base = [{"teacher": "logits", "weight": 3}, {"student": "head.aspp", "teacher": "head.aspp", "temperature": 4}]
    changed = [{"teacher": "logits", "weight": 5}, {"student": "head.aspp", "teacher": "head.aspp", "temperature": 1}]
    # kl (the YAML's distill_loss) first, then kl_cwd's names as it gives them: the cache's first-seen order
    assert reduced(base) == reduced(changed) == [None, [{"teacher": "logits"}, {"teacher": "head.aspp"}]]
    assert reduced(base, {"mse": {"terms": [{"teacher": "head"}]}}) != reduced(base)
    assert reduced(base, {"kl2": {"terms": [{"teacher": "logits", "weight": 1}]}}) == reduced(base)


@pytest.mark.parametrize(
    "distill",
    [
        {"kl": {"terms": None}, "kl_cwd": {"terms": [{"teacher": "logits"}, {"teacher": "head.aspp"}]}},
        {"mse": {"terms": [{"teacher": "head"}]}, "kl": {"terms": None}, "cwd": {"terms": [{"teacher": "head.aspp"}]}},
        {"a": {"terms": [{}, {"teacher": "head.aspp"}]}, "b": {"terms": [{"teacher": "head"}, {"teacher": "logits"}]}},
    ],
)
def test_the_reduced_terms_keep_the_order_the_methods_give_the_cache(distill):
    """The cache stores (and its manifest lists) the teacher's tensors in the first-seen order of the term lists
    it is given; the reduced terms must give the order every method's own terms give, or a cache of an
    unchanged study gets another manifest hash, and its distilled runs another run key."""
    from types import SimpleNamespace

    from segdistill.distill.cache import teacher_names
    from segdistill.study import teacher_terms

    yaml_names = ["logits", "head"]  # the student YAML's distill_loss, as resolved

    def names(term_lists):
        lists = [
            [SimpleNamespace(teacher=n) for n in yaml_names]
            if terms is None
            else [SimpleNamespace(teacher=t.get("teacher", "logits")) for t in terms]
            for terms in term_lists
        ]
        return teacher_names(lists)

    every_method = [spec["terms"] for spec in distill.values()]
    assert names(teacher_terms({"distill": distill})) == names(every_method)


def test_every_seeds_cache_is_gathered_from_the_one_table(tiny_study):
    workdir, _ = tiny_study
    table = json.loads((workdir / "results/teacher_outputs/distinct/inputs.json").read_text())
    assert table["why_empty"] is None and len(table["digests"]) > 0
    for seed in (0, 1):
        log = (workdir / f"logs/teacher_outputs/seed{seed}.log").read_text()
        assert re.search(r"teacher outputs: (\d+) of \1 samples gathered from results/teacher_outputs/distinct", log), (
            log
        )
