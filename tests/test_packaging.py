"""The install story stays consistent: pins agree everywhere; the workflow is lint- and format-clean."""

import re
import subprocess
import sys

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
    proc = subprocess.run(
        [str(BIN / "snakemake"), "--lint", "--workflow-profile", "none"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    assert "Lints for" not in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-5000:]


def _engine_imports() -> dict[str, set[str]]:
    """Module -> the segdistill modules it imports (anywhere in the file, lazy imports included)."""
    import ast

    src = ROOT / "src"
    graph = {}
    for path in (src / "segdistill").rglob("*.py"):
        parts = path.relative_to(src).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = name if parts[-1] == "__init__" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("segdistill")}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: climb from the module's package
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                if base.startswith("segdistill"):
                    deps.add(base)
                    deps |= {f"{base}.{a.name}" for a in node.names}
        graph[name] = deps
    return {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}


def test_no_module_imports_one_that_imports_it_back():
    """The engine's modules form layers: no import circle, however long (packages' __init__ re-exports aside)."""
    graph = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in _engine_imports().items()}
    assert graph["segdistill.report.stats"] and "segdistill.report.records" in graph["segdistill.report.stats"]
    cycles = []

    def visit(node, path, seen):
        for dep in graph[node]:
            if dep == path[0]:
                cycles.append(path + [dep])
            elif dep not in seen and dep > path[0]:  # report each circle once, from its smallest module
                seen.add(dep)
                visit(dep, path + [dep], seen)

    for start in sorted(graph):
        visit(start, [start], {start})
    cycles = [c for c in cycles if not any(b.startswith(a + ".") or a.startswith(b + ".") for a, b in zip(c, c[1:]))]
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles[:5])


def test_no_function_in_src_is_longer_than_80_lines():
    """Long functions are split into named steps: about 60 lines, 80 at the most (the body and its docstring,
    from `def` to the last line)."""
    import ast

    long = []
    for path in sorted((ROOT / "src").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > 80:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "functions over 80 lines: " + "; ".join(long)


def test_the_trainer_class_and_the_command_line_stay_under_300_lines():
    """The Trainer trains (the run folder, ranks and data stream live beside it) and the command line is built
    from the specs: each at most 300 lines, the Trainer from `class` to its last line, cli.py whole."""
    import ast

    tree = ast.parse((ROOT / "src/segdistill/trainer.py").read_text())
    trainer = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Trainer")
    assert trainer.end_lineno - trainer.lineno + 1 <= 300, f"Trainer: {trainer.end_lineno - trainer.lineno + 1} lines"
    cli = len((ROOT / "src/segdistill/cli.py").read_text().splitlines())
    assert cli <= 300, f"cli.py: {cli} lines"


def test_jobs_import_paddleseg_without_scikit_learn_and_its_auc_still_works():
    """segdistill.paddle_env imports paddleseg with scikit-learn deferred (a second of every job's start-up);
    paddleseg's one use of it, `auc_roc`, still computes scikit-learn's number, and `import sklearn` is real."""
    code = (
        "import sys\n"
        "import segdistill.trainer, segdistill.evaluate, segdistill.distill.cache\n"
        "assert 'sklearn' not in sys.modules, 'sklearn imported'\n"
        "import numpy as np\n"
        "from paddleseg.utils.metrics import auc_roc\n"
        "logits = np.array([[[[0.1, 0.8], [0.6, 0.3]], [[0.9, 0.2], [0.4, 0.7]]]])\n"
        "label = np.array([[[[1, 0], [1, 0]]]])\n"
        "got = auc_roc(logits, label, num_classes=2)\n"
        "from sklearn.metrics import roc_auc_score\n"
        "assert type(sys.modules['sklearn']).__name__ == 'module'\n"
        "assert got == roc_auc_score([1, 0, 1, 0], [0.9, 0.2, 0.4, 0.7]), got\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
