"""The install story stays consistent: pins agree everywhere; the workflow is lint- and format-clean."""

import re
import subprocess

import yaml

from conftest import BIN, ROOT


def pins(path):
    """name==version lines of a requirements file, following -r includes."""
    out = {}
    for line in (ROOT / path).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-r "):
            out.update(pins((ROOT / path).parent.relative_to(ROOT) / line[3:].strip()))
        elif "==" in line:
            name, version = line.split("==")
            out[name.lower().replace("_", "-")] = version
    return out


def conda_pins(path):
    env = yaml.safe_load((ROOT / path).read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    return {p.split("==")[0].lower().replace("_", "-"): p.split("==")[1] for p in pip}


def test_every_pin_is_exact():
    for path in ("requirements/stack.txt", "requirements/dev.txt", "requirements/paddle-nodeps.txt"):
        for line in (ROOT / path).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line and not line.startswith("-r "):
                assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][A-Za-z0-9.+\-]*", line), f"{path}: {line}"


def test_conda_environments_match_requirements():
    req = pins("requirements/dev.txt")
    assert conda_pins("environment.yml") == req
    assert conda_pins("workflow/envs/segdistill.yaml") == req


def test_no_deps_packages_are_pinned_in_post_deploy_and_readme():
    nodeps = pins("requirements/paddle-nodeps.txt")
    assert nodeps == {"paddleseg": "2.8.0", "paddleslim": "2.6.0"}
    post = (ROOT / "workflow/envs/segdistill.post-deploy.sh").read_text()
    for name, version in nodeps.items():
        assert f"{name}=={version}" in post
        assert name not in pins("requirements/dev.txt")


def test_installed_versions_are_the_pinned_ones():
    from importlib.metadata import version

    for name, pinned in {**pins("requirements/dev.txt"), **pins("requirements/paddle-nodeps.txt")}.items():
        assert version(name) == pinned, name


def test_snakefmt_clean():
    proc = subprocess.run([str(BIN / "snakefmt"), "--check", "workflow"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_snakemake_lint_clean():
    proc = subprocess.run([str(BIN / "snakemake"), "--lint", "--workflow-profile", "none"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    assert "Lints for" not in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-5000:]
