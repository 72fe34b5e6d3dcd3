"""The report stage on the tiny study: every output, consistent numbers, the exported model's check,
provenance, `snakemake --report` rendered by headless Chromium, and byte-identical summaries from two fresh
runs of the same config."""

import csv
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import BIN, ROOT, run_snakemake, tiny_config

pytestmark = pytest.mark.slow

OUTPUTS = [
    "results/report/summary.csv",
    "results/report/summary.md",
    "results/report/stats.json",
    "results/report/cost.csv",
    "results/export/export.json",
    "results/report/figures/arm_means.png",
    "results/report/figures/paired.png",
    "results/report/figures/forest.png",
    "results/report/figures/curves.png",
    "results/report/figures/samples.png",
    "results/report/provenance.json",
    "results/report/overview.rst",
    "results/report/overview.html",
]


def schema_default(*keys):
    node = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    for k in keys:
        node = node["properties"][k]
    return node["default"]


@pytest.fixture(scope="module")
def studies(request, tmp_path_factory):
    """A: the session's tiny study (the whole workflow, report stage included), then `snakemake --report`.
    B: a second fresh run of the same config in its own folder, up to summary.csv, for the byte comparison.
    B starts first and runs beside A when A has not run yet in this session, so both cores stay busy."""
    b = tmp_path_factory.mktemp("report_b")
    cfg_b = tiny_config(b)
    cmd_b = [
        str(BIN / "snakemake"),
        "--snakefile",
        str(ROOT / "workflow/Snakefile"),
        "--directory",
        str(b),
        "--workflow-profile",
        "none",
        "--cores",
        "1",
        "results/report/summary.csv",
        "--configfile",
        str(cfg_b),
    ]
    with open(b / "snakemake.out", "w") as out:
        proc_b = subprocess.Popen(
            cmd_b, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ, SEGDISTILL_GPU_IDS="")
        )
        try:
            a, cfg_a = request.getfixturevalue("tiny_study")
            html = tmp_path_factory.mktemp("report_html") / "report.html"
            run_snakemake(a, "--cores", "1", "--configfile", cfg_a, "--report", html)
        finally:
            code_b = proc_b.wait(timeout=900)
    assert code_b == 0, (b / "snakemake.out").read_text()[-4000:]
    assert Path(cfg_a).read_bytes() == cfg_b.read_bytes()  # the same config, byte for byte
    return a, b, html


def test_every_output_exists(studies):
    a, _, _ = studies
    for rel in OUTPUTS:
        assert (a / rel).is_file() and (a / rel).stat().st_size > 0, rel
    for name in ("cost", "export"):
        assert (a / f"logs/report/{name}.log").is_file()
        assert (a / f"benchmarks/report/{name}.tsv").is_file()


def test_same_config_same_summary_bytes(studies):
    a, b, _ = studies
    ca, cb = (a / "results/report/summary.csv").read_bytes(), (b / "results/report/summary.csv").read_bytes()
    assert len(ca.splitlines()) == 1 + 7 * 2  # 7 runs x 2 splits
    assert ca == cb


def test_stats_agree_with_summary(studies):
    """Headlines are on the test split (the default report.split); val, which chose the checkpoints, is kept
    apart and labelled."""
    a, _, _ = studies
    df = pd.read_csv(a / "results/report/summary.csv")
    val = df[df.split == "test"]  # the headline split (name kept short below)
    st = json.loads((a / "results/report/stats.json").read_text())
    assert st["split"] == "test" and st["biased"] is False
    assert st["selection"]["split"] == "val" and "used to select checkpoints" in st["selection"]["label"]
    assert [v["method"] for v in st["verdicts"]] == ["kl", "kl_cwd"]
    md = (a / "results/report/summary.md").read_text().splitlines()
    # Two distilled arms: one family of two comparisons, the verdicts from the simultaneous intervals.
    assert md[0].startswith("- kl: ") and " mIoU points on test (simultaneous 95% CI " in md[0]
    assert st["family"]["members"] == 2 and [p["a"] + " − " + p["b"] for p in st["pairs"]] == ["kl_cwd − kl"]
    assert md[0] == "- " + st["verdicts"][0]["sentence"]
    arms = {(x["arm"], x["method"]): x for x in st["arms"]}
    assert set(arms) == {("teacher", "none"), ("student", "none"), ("distilled", "kl"), ("distilled", "kl_cwd")}
    for (arm, method), entry in arms.items():
        g = val[(val.arm == arm) & (val.method == method)]
        assert entry["n"] == len(g) and entry["seeds"] == sorted(g.seed)
        assert entry["metrics"]["miou"]["mean"] == pytest.approx(g.miou.mean(), abs=1e-6)
        if len(g) > 1:
            assert entry["metrics"]["miou"]["std"] == pytest.approx(g.miou.std(ddof=1), abs=1e-6)
    stu = val[val.arm == "student"].set_index("seed").miou
    for gain in (x for x in st["gains"] if x["metric"] == "miou"):
        dis = val[(val.arm == "distilled") & (val.method == gain["method"])].set_index("seed").miou
        assert gain["n"] == 2 and gain["seeds"] == [0, 1]
        assert gain["mean"] == pytest.approx((dis - stu).mean(), abs=1e-6)
    # The setting and the exported run are chosen on val, never on the headline split.
    sel = df[(df.split == "val") & (df.arm == "distilled")]
    means = sel.groupby("method").miou.mean()
    chosen = sorted(means[means == means.max()].index)[0]
    assert st["best_setting"]["method"] == chosen and st["best_setting"]["chosen_on"] == "val"
    best = sel[sel.method == chosen].sort_values(["miou", "run"], ascending=[False, True]).iloc[0]
    assert st["best_run"]["run"] == best.run and st["best_run"]["chosen_on"] == "val"


def test_cost_table(studies):
    a, _, _ = studies
    with open(a / "results/report/cost.csv", newline="") as fh:
        rows = {r["model"]: r for r in csv.DictReader(fh)}
    assert set(rows) == {"teacher", "student"}
    for r in rows.values():
        assert r["input"] == "32x32" and r["latency_runs"] == str(schema_default("report", "latency_runs"))
        assert int(r["flops"]) == 2 * int(r["macs"]) > 0 and float(r["cpu_ms"]) > 0
        # The rule takes every core (the session study runs with --cores 2) so nothing else runs while it times.
        assert r["cpu_threads"] == "2"
    assert float(rows["student"]["compression"]) == pytest.approx(
        int(rows["teacher"]["params"]) / int(rows["student"]["params"])
    )


def test_export_is_best_run_and_checked(studies):
    a, _, _ = studies
    ex = json.loads((a / "results/export/export.json").read_text())
    st = json.loads((a / "results/report/stats.json").read_text())
    assert ex["run"] == st["best_run"]["run"] and ex["chosen_on"] == "val"
    assert ex["max_abs_diff"] <= 1e-4 and ex["tolerance"] == 1e-4
    assert ex["input_spec"] == [None, 3, 32, 32]
    folder = a / "results/export/best_student"
    assert (folder / "model.pdiparams").is_file() and (folder / "deploy.yaml").is_file()
    assert yaml.safe_load((folder / "deploy.yaml").read_text())["Deploy"]["input_shape"] == [-1, 3, 32, 32]


def test_figures_not_blank(studies):
    import matplotlib.image as mpimg

    a, _, _ = studies
    for name in ("arm_means", "paired", "forest", "curves", "samples"):
        img = mpimg.imread(str(a / f"results/report/figures/{name}.png"))
        assert img[..., :3].std() > 0.05, name


def test_provenance(studies):
    from segdistill.paddle_env import paddle

    from segdistill.report.provenance import config_hash

    a, _, _ = studies
    prov = json.loads((a / "results/report/provenance.json").read_text())
    assert prov["packages"]["paddlepaddle"] == paddle.__version__
    assert prov["config_sha256"] == config_hash(prov["config"])
    assert prov["config"]["report"] == {
        "split": schema_default("report", "split"),
        "num_images": schema_default("report", "num_images"),
        "latency_runs": schema_default("report", "latency_runs"),
        "min_effect": schema_default("report", "min_effect"),
    }
    study = str(a / "study.yaml")
    assert prov["config_files"][study] == hashlib.sha256((a / "study.yaml").read_bytes()).hexdigest()
    summary = "results/report/summary.csv"
    assert prov["result_files"][summary] == hashlib.sha256((a / summary).read_bytes()).hexdigest()
    assert prov["machine"]["cpu_count"] == os.cpu_count() and prov["date_utc"].endswith("+00:00")
    if shutil.which("git") and (ROOT / ".git").exists():
        # The checkout may gain commits while the study runs: the recorded commit must be HEAD or before it.
        commit = prov["git"]["commit"]
        assert len(commit) == 40
        ancestor = subprocess.run(["git", "-C", str(ROOT), "merge-base", "--is-ancestor", commit, "HEAD"])
        assert ancestor.returncode == 0, commit


def test_report_html_has_tables_and_figures(studies):
    _, _, report = studies
    html = report.read_text()
    for needle in (
        "arm_means.png",
        "paired.png",
        "curves.png",
        "samples.png",
        "cost.csv",
        "provenance.json",
        "overview.html",
        "Model cost",
        "Figures",
        "Provenance",
        "Export",
    ):
        assert needle in html, needle


def test_overview_html_embeds_figures_after_verdicts(studies):
    import base64

    a, _, _ = studies
    page = (a / "results/report/overview.html").read_text()
    paired = base64.b64encode((a / "results/report/figures/paired.png").read_bytes()).decode()
    assert f'src="data:image/png;base64,{paired}"' in page
    forest = base64.b64encode((a / "results/report/figures/forest.png").read_bytes()).decode()
    assert f'src="data:image/png;base64,{forest}"' in page
    for section in ("Method against method", "Robustness", "Seeds and power"):
        assert section in page, section
    st = json.loads((a / "results/report/stats.json").read_text())
    first = st["verdicts"][0]["sentence"].split(" (")[0]
    assert 0 <= page.index(first) < page.index(paired)


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    reason = "headless Chromium is not installed (apt-get install -y chromium)"
    if os.environ.get("CI"):
        pytest.fail(reason + "; CI installs it in .ci/run, so its absence there is an error")
    pytest.skip(reason)


def _chrome(args, tmp_path, timeout=120):
    cmd = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chrome'}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def test_chromium_renders_report(studies, tmp_path):
    import re

    import matplotlib.image as mpimg

    _, _, report = studies
    url = report.as_uri()
    png = tmp_path / "report.png"
    proc = _chrome([f"--screenshot={png}", "--window-size=1280,2000", url], tmp_path)
    assert png.is_file(), proc.stderr[-2000:]
    img = mpimg.imread(str(png))[..., :3]
    assert img.shape[:2] == (2000, 1280)
    assert img.std() > 0.05  # not a blank page
    dom = _chrome(["--dump-dom", url], tmp_path).stdout
    # The start page renders the overview tables (not just the data the app embeds in <script> blocks).
    visible = re.sub(r"<script\b.*?</script>", "", dom, flags=re.S)
    assert "mIoU per arm" in visible and "Gain of distilled over student" in visible
    tables = re.findall(r"<table\b.*?</table>", visible, flags=re.S)
    arm_table = next(t for t in tables if "mIoU per arm" in t)
    for label in ("teacher", "student", "distilled (kl)", "distilled (kl_cwd)"):
        assert f">{label}<" in arm_table, label
    assert any("Model cost" in t and ">teacher<" in t for t in tables)
