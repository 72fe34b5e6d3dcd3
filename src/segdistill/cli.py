"""The `segdistill` command line, for people: every subcommand calls the engine function the workflow calls.

Training: train, distill-train (the tutorial's `distill_train.py` flags), teacher-outputs, patch-teacher, layers.
Data: make-synthetic, download, extract, validate-data, fetch-backbone.
Evaluation and report: evaluate, summary, stats, cost, export, figure, provenance, overview.
Environment: doctor (Paddle build, CUDA, devices, installed stack vs the pins).
A SegDistillError prints one line and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from segdistill import threads
from segdistill.errors import SegDistillError
from segdistill.report.names import HEADLINE_SPLIT
from segdistill.specs import EvaluateSpec, TeacherOutputsSpec, TrainSpec, test_config_arg


def _flag(parser, name: str, **kw):
    """PaddleSeg spells flags with underscores; accept both `--save_dir` and `--save-dir`."""
    names = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
    parser.add_argument(*names, dest=name, **kw)


def _spec_flags(p, cls, skip=(), spec_file=True, block=None) -> None:
    """Flags made from the fields of a job spec (segdistill.specs): a field's type gives the flag's type, its
    metadata the help, choices and nargs; a bool is a switch (`--no_<name>` when it defaults to true); a block of
    fields (a dataclass, e.g. `evaluate`) gives `--<block>_<name>` flags. Flags not given stay out of the
    namespace (default SUPPRESS), so `_spec` can tell them from defaults."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta, name = f.metadata, f"{block}_{f.name}" if block else f.name
        if f.name in skip or meta.get("cli") is False:
            continue
        if dataclasses.is_dataclass(hints[f.name]):
            _spec_flags(p, hints[f.name], spec_file=False, block=f.name)
            continue
        kw = {"help": meta.get("help"), "default": argparse.SUPPRESS}
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            kw["help"] = f"{kw['help'] or ''} (required{' unless --spec' if spec_file else ''})".lstrip()
        base = next((a for a in typing.get_args(hints[f.name]) if a is not type(None)), hints[f.name])
        dest = f"{block}.{f.name}" if block else f.name
        if base is bool:
            negate = meta.get("cli_default", f.default) is True
            names = [f"--no_{name}", f"--no-{name.replace('_', '-')}"] if negate else None
            kw["action"] = "store_false" if negate else "store_true"
        else:
            names = None
            kw["type"] = meta.get("type") or (typing.get_args(base)[0] if typing.get_origin(base) is list else base)
            kw.update({k: meta[k] for k in ("choices", "nargs") if k in meta})
        if not names:
            names = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
        p.add_argument(*names, dest=dest, **kw)
    if spec_file:
        _flag(p, "spec", default=None, help="a job spec (JSON) written by the workflow, instead of the flags above")
    if block is None:
        p.set_defaults(spec_class=cls, spec_parser=p)


def _spec_values(cls, args=None, block=None) -> dict:
    """The fields' command-line defaults (`args` None), else the flags given in `args`; a block's as a dict."""
    import dataclasses
    import typing

    hints, out = typing.get_type_hints(cls), {}
    for f in dataclasses.fields(cls):
        dest = f"{block}.{f.name}" if block else f.name
        if dataclasses.is_dataclass(hints[f.name]):
            sub = _spec_values(hints[f.name], args, block=f.name)
            if sub or args is None:
                out[f.name] = sub
        elif args is not None:
            if hasattr(args, dest):
                out[f.name] = getattr(args, dest)
        else:
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            default = f.metadata.get("cli_default", default)
            if default is not dataclasses.MISSING:
                out[f.name] = default
    return out


def _spec(args, many=False, **extra):
    """The job spec of a subcommand: from `--spec FILE`, else from its flags (command-line defaults) and `extra`.
    `many`: the subcommand runs a list of specs one after another (a spec file may hold one); always a list."""
    import dataclasses

    from segdistill.specs import read_spec

    cls, p = args.spec_class, args.spec_parser
    given = _spec_values(cls, args)
    if getattr(args, "spec", None):
        if given:
            p.error(f"--spec takes no other flags (got --{', --'.join(given)})")
        spec = read_spec(args.spec)
        specs = spec if isinstance(spec, list) else [spec]
        if not all(isinstance(s, cls) for s in specs):
            raise SegDistillError(f"{args.spec}: a spec of another job, not of `{args.command}`")
        if len(specs) > 1 and not many:
            raise SegDistillError(f"{args.spec}: holds {len(specs)} specs; `{args.command}` runs one")
        return specs if many else specs[0]
    defaults = _spec_values(cls)
    values = {**defaults, **given, **extra}
    for name, sub in given.items():  # a block's flags given over its defaults
        if isinstance(sub, dict):
            values[name] = {**defaults[name], **sub}
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in values]
    if missing:
        p.error("the following arguments are required: " + ", ".join(f"--{m}" for m in missing))
    return [cls(**values)] if many else cls(**values)


def cmd_train(args):
    from segdistill.trainer import train

    train(_spec(args))


def cmd_distill_train(args):
    from segdistill.trainer import train

    teacher = args.teacher_config or args.teather_config
    if not teacher:
        raise SegDistillError("--teather_config (or --teacher_config) is required")
    train(_spec(args, config=args.student_config, teacher_config=teacher))


def cmd_teacher_outputs(args):
    from segdistill.distill.cache import write_teacher_outputs
    from segdistill.timing import Clock

    # Several specs (the seeds that share a teacher) run in this one process: one start-up for all of them.
    clock = Clock()
    for spec in _spec(args, many=True):
        write_teacher_outputs(spec, log=lambda msg: print(msg, file=sys.stderr, flush=True), clock=clock)
    print(clock.line(), file=sys.stderr, flush=True)


def cmd_evaluate(args):
    from segdistill.evaluate import evaluate_run

    spec = _spec(args)
    to_stdout = spec.out == "-"
    if to_stdout:
        spec.out = None
    result = evaluate_run(spec)
    if to_stdout:
        print(json.dumps(result, indent=2))


def cmd_patch_teacher(args):
    from segdistill.config import patch_teacher

    patch_teacher(args.config, args.weights, args.out)
    print(f"wrote {args.out}: model.pretrained = {args.weights} (all parameters load)", file=sys.stderr)


def cmd_layers(args):
    from segdistill.layers import list_layers

    print(list_layers(args.config, tuple(args.size) if args.size else None, depth=args.depth))


def cmd_make_synthetic(args):
    from segdistill.data import generate

    info = generate(args.out, num_images=args.num_images, size=args.size, seed=args.seed, split=tuple(args.split))
    print(json.dumps(info, indent=2, default=str))


def cmd_download(args):
    from segdistill.data import download

    seen = download(args.url, args.zip, sha256=args.sha256)
    print(f"downloaded {args.url} -> {args.zip} (sha256 {seen})", file=sys.stderr)


def cmd_extract(args):
    from segdistill.data import extract_to

    extract_to(args.zip, args.out)


def cmd_validate_data(args):
    from segdistill.data import write_validation

    lists = {}
    for item in args.lists:
        split, sep, name = item.partition("=")
        if not sep or not name:
            raise SegDistillError(f"--lists: expected SPLIT=FILE, got {item!r}")
        lists[split] = name
    info = write_validation(
        args.root,
        args.num_classes,
        out=None if args.out == "-" else args.out,
        archive=args.archive,
        ignore_index=args.ignore_index,
        required_splits=args.splits,
        list_names=lists,
    )
    if args.out == "-":
        print(json.dumps(info, indent=2))


def cmd_summary(args):
    from segdistill.report.summary import write_summary

    write_summary(args.evals, args.stats, args.out_csv, args.out_md, split=args.split)


def cmd_fetch_backbone(args):
    from segdistill.pretrained import fetch_backbone

    print(fetch_backbone(args.url, args.cache, sha256=args.sha256))


def cmd_stats(args):
    from segdistill.report.stats import write_stats

    write_stats(args.evals, args.out, split=args.split, min_effect=args.min_effect)


def cmd_cost(args):
    from segdistill.doctor import check_devices
    from segdistill.report.cost import cost_table

    print(check_devices(), file=sys.stderr)  # a job that leased a GPU Paddle cannot use stops here

    models = [
        ("teacher", args.teacher_config, args.teacher_model),
        ("student", args.student_config, args.student_model),
    ]
    for row in cost_table(models, args.out, runs=args.runs, warmup=args.warmup, test_config=args.test_config):
        print(
            f"{row['model']}: {row['params']} params, {row['flops'] / 1e9:.3f} GFLOPs at {row['input']}, "
            f"CPU {row['cpu_ms']:.2f} ms/img ({row['protocol']}, {row['cpu_threads']} threads)",
            file=sys.stderr,
        )


def cmd_export(args):
    from segdistill.report.export import export_best

    rec = export_best(args.evals, args.out_dir, args.out_json, data_root=args.data_root, split=args.split, tol=args.tol)
    print(f"exported {rec['run']} -> {args.out_dir}: max |logit diff| {rec['max_abs_diff']:.3g}", file=sys.stderr)


def cmd_figure(args):
    from segdistill.report.figure_table import ARGUMENTS, FIGURES

    figure = FIGURES[args.name]
    values = {a: getattr(args, a) for a in figure.arguments}
    missing = [a for a, v in values.items() if v is None and ARGUMENTS[a].default is ...]
    if missing:
        raise SegDistillError(f"figure {figure.name}: --{', --'.join(missing)} required")
    for a, v in values.items():
        if ARGUMENTS[a].pairs:
            values[a] = {ARGUMENTS[a].key(k): x for k, x in v}
    figure.draw(args.out, **values)


def cmd_provenance(args):
    from segdistill.report.provenance import write_provenance

    config = json.loads(Path(args.config_json).read_text()) if args.config_json else {}
    write_provenance(args.out, config=config, config_files=args.files, result_files=args.results, repo_dir=args.repo)


def cmd_overview(args):
    from segdistill.report.figure_table import overview_figures
    from segdistill.report.overview import write_overview

    write_overview(
        args.summary,
        args.stats,
        args.cost,
        args.out_rst,
        args.out_html,
        export_json=args.export,
        provenance_json=args.provenance,
        figures=overview_figures(args.figures),
    )


def cmd_doctor(args):
    from segdistill.doctor import report

    text, ok = report(args.requirements)
    print(text, flush=True)
    if args.train:
        from segdistill.gpu_check import gpu_check, table

        rows = gpu_check(args.config, args.work, log=lambda msg: print(msg, file=sys.stderr, flush=True))
        print("\n" + table(rows))
        if any(r.status == "FAILED" for r in rows):
            raise SegDistillError("some training cases failed (see the table; tracebacks above)")
    if args.strict and not ok:
        raise SegDistillError("the installed stack or devices do not match (see above)")


def _version() -> str:
    """The installed distribution's version (package metadata), else the source tree's."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("segdistill")
    except PackageNotFoundError:
        from segdistill import __version__

        return __version__


def _training_commands(sub) -> None:
    """Subcommands: train, distill, evaluate and look inside a model."""
    p = sub.add_parser("train", help="train one arm (teacher, student, or distilled with --teacher_config)")
    _spec_flags(p, TrainSpec)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("distill-train", help="PaddleSeg's deploy/slim/distill/distill_train.py, same flags")
    _flag(p, "teather_config", default=None, help="teacher config (the tutorial's spelling)")
    _flag(p, "teacher_config", default=None)
    _flag(p, "student_config", required=True)
    _spec_flags(p, TrainSpec, skip=("config", "teacher_config", "distill"), spec_file=False)
    p.set_defaults(func=cmd_distill_train)

    p = sub.add_parser(
        "teacher-outputs",
        help="run a teacher once over a training stream and store what the "
        "distillation terms take from it (train --teacher_outputs)",
    )
    _spec_flags(p, TeacherOutputsSpec)
    p.set_defaults(func=cmd_teacher_outputs)

    p = sub.add_parser("evaluate", help="metrics of trained weights on val/test -> JSON")
    _spec_flags(p, EvaluateSpec)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("patch-teacher", help="copy a teacher config with model.pretrained -> trained weights")
    _flag(p, "config", required=True)
    _flag(p, "weights", required=True)
    _flag(p, "out", required=True)
    _flag(p, "pretrained_cache", default=None)
    p.set_defaults(func=cmd_patch_teacher)

    p = sub.add_parser("layers", help="every sublayer of a config's model with its output shape")
    p.add_argument("config")
    p.add_argument("--size", nargs=2, type=int, metavar=("H", "W"), default=None)
    p.add_argument("--depth", type=int, default=None, help="only names with at most this many dots")
    p.set_defaults(func=cmd_layers)


def _data_commands(sub) -> None:
    """Subcommands: make, fetch and check data sets and backbones."""
    p = sub.add_parser("make-synthetic", help="write the synthetic fundus-like set (OpticDiscSeg layout)")
    _flag(p, "out", required=True)
    _flag(p, "num_images", type=int, default=200)
    _flag(p, "size", type=int, default=64)
    _flag(p, "seed", type=int, default=0)
    _flag(
        p,
        "split",
        type=float,
        nargs=3,
        default=[0.7, 0.15, 0.15],
        metavar=("TRAIN", "VAL", "TEST"),
        help="fractions of the images per split",
    )
    p.set_defaults(func=cmd_make_synthetic)

    p = sub.add_parser("download", help="download a data set archive, checking its SHA-256 when given")
    _flag(p, "url", default="https://paddleseg.bj.bcebos.com/dataset/optic_disc_seg.zip")
    _flag(p, "zip", required=True)
    _flag(p, "sha256", default=None)
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("extract", help="extract a data set archive (zip, tar, tar.gz) safely")
    _flag(p, "zip", required=True)
    _flag(p, "out", required=True)
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("validate-data", help="check a data set in PaddleSeg's list-file layout")
    p.add_argument("root")
    _flag(p, "num_classes", type=int, default=2)
    _flag(p, "ignore_index", type=int, default=255)
    _flag(p, "splits", nargs="+", default=["train", "val"], help="splits that must exist and be non-empty")
    _flag(
        p,
        "lists",
        nargs="*",
        default=[],
        metavar="SPLIT=FILE",
        help="list file of a split, relative to the root (default <split>_list.txt)",
    )
    _flag(p, "archive", default=None, help="record this archive's SHA-256 in the report")
    _flag(p, "out", default="-")
    p.set_defaults(func=cmd_validate_data)

    p = sub.add_parser("fetch-backbone", help="download and cache a `pretrained:` backbone URL")
    p.add_argument("url")
    _flag(p, "cache", default="resources/pretrained")
    _flag(p, "sha256", default=None, help="the file's published SHA-256: a download that differs is refused")
    p.set_defaults(func=cmd_fetch_backbone)


def _report_commands(sub) -> None:
    """Subcommands: the report's tables, statistics, cost and export."""
    p = sub.add_parser("summary", help="per-run evaluation JSONs and stats.json -> summary.csv and summary.md")
    p.add_argument("evals", nargs="+")
    _flag(p, "stats", required=True, help="stats.json of the same records (segdistill stats)")
    _flag(p, "split", default=HEADLINE_SPLIT, help="headline split (val chose the checkpoints: biased)")
    _flag(p, "out_csv", required=True)
    _flag(p, "out_md", required=True)
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("stats", help="evaluation JSONs -> stats.json (per-arm mean ± std, paired gains, best setting)")
    p.add_argument("evals", nargs="+")
    _flag(p, "split", default=HEADLINE_SPLIT, help="headline split (val chose the checkpoints: biased)")
    _flag(
        p,
        "min_effect",
        type=float,
        default=None,
        help="gain in mIoU points the power line plans seeds for (default: each arm's observed mean)",
    )
    _flag(p, "out", required=True)
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("cost", help="params, FLOPs and latency of teacher and student -> cost.csv")
    for role in ("teacher", "student"):
        _flag(p, f"{role}_config", required=True)
        _flag(p, f"{role}_model", default=None, help="weights (default: the untrained model)")
    _flag(p, "runs", type=int, default=20, help="timed forward passes per model")
    _flag(p, "warmup", type=int, default=3, help="untimed forward passes first")
    _flag(
        p,
        "test_config",
        type=test_config_arg,
        default=None,
        help="PaddleSeg test_config timed for both models, a YAML mapping (default: each YAML's own)",
    )
    _flag(p, "out", required=True)
    p.set_defaults(func=cmd_cost)

    p = sub.add_parser(
        "export",
        help="the distilled run chosen on val (best arm, its best run) -> Paddle inference model, checked on --split",
    )
    p.add_argument("evals", nargs="+", help="evaluation JSONs of the distilled runs")
    _flag(p, "data_root", default=None)
    _flag(p, "split", default=HEADLINE_SPLIT, help="headline split: reported and used for the parity check")
    _flag(p, "tol", type=float, default=1e-4, help="max |logit difference| allowed")
    _flag(p, "out_dir", required=True)
    _flag(p, "out_json", required=True)
    p.set_defaults(func=cmd_export)


def _report_page_commands(sub) -> None:
    """Subcommands: the report's figures, provenance record and overview page."""
    from segdistill.report.figure_table import ARGUMENTS, FIGURES

    p = sub.add_parser("figure", help="a report figure, drawn as the workflow draws it")
    p.add_argument("name", choices=list(FIGURES))
    for name, arg in ARGUMENTS.items():
        users = ", ".join(f.name for f in FIGURES.values() if name in f.arguments)
        kw = {"default": None if arg.default is ... else arg.default, "help": f"{users}: {arg.help}"}
        kw.update({"nargs": 2, "action": "append", "metavar": arg.pairs} if arg.pairs else {"type": arg.type})
        _flag(p, name, **kw)
    _flag(p, "out", required=True)
    p.set_defaults(func=cmd_figure)

    p = sub.add_parser("provenance", help="package versions, config hashes, git commit, machine, date -> JSON")
    _flag(p, "config_json", default=None, help="the study config as a JSON file")
    _flag(p, "files", nargs="*", default=[], help="config files to hash")
    _flag(p, "results", nargs="*", default=[], help="result files to hash")
    _flag(p, "repo", default=None, help="git checkout of the workflow")
    _flag(p, "out", required=True)
    p.set_defaults(func=cmd_provenance)

    p = sub.add_parser("overview", help="the report's tables (reST for the start page, full HTML page)")
    for name in ("summary", "stats", "cost", "out_rst", "out_html"):
        _flag(p, name, required=True)
    _flag(p, "export", default=None)
    _flag(p, "provenance", default=None)
    _flag(p, "figures", nargs="*", default=[], help="report figures (<name>.png) the page shows, with their titles")
    p.set_defaults(func=cmd_overview)


def _environment_commands(sub) -> None:
    """Subcommands: the installed stack and the devices."""
    p = sub.add_parser("doctor", help="paddle build, CUDA, cuDNN, NCCL, devices, and the installed stack vs the pins")
    _flag(p, "requirements", default=None, help="folder of requirements/*.txt (default: the source checkout's)")
    _flag(p, "strict", action="store_true", help="exit non-zero when anything does not match")
    _flag(
        p,
        "train",
        action="store_true",
        help="also train tiny models per precision/level (train, eval, resume) and, with 2 GPUs, distil over "
        "both; prints a table (docs/scaling.md, 'Checking a GPU box')",
    )
    _flag(p, "config", default=None, help="with --train: the PaddleSeg YAML to train (default: the CPU student)")
    _flag(p, "work", default=None, help="with --train: keep the runs in this folder (default: a temp folder)")
    p.set_defaults(func=cmd_doctor)


# Commands that run a model: every core this process may use unless told otherwise (segdistill.threads, applied
# before paddle is imported). The workflow's jobs set OMP_NUM_THREADS, so they keep their rule's threads.
MODEL_COMMANDS = "train distill-train teacher-outputs evaluate layers cost export figure doctor".split()


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="segdistill", description=__doc__.split("\n")[0])
    ap.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = ap.add_subparsers(dest="command", required=True)
    _training_commands(sub)
    _data_commands(sub)
    _report_commands(sub)
    _report_page_commands(sub)
    _environment_commands(sub)
    for name in MODEL_COMMANDS:
        threads.add_flag(sub.choices[name])
    return ap


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command in MODEL_COMMANDS:
            threads.apply(args.threads)
        args.func(args)
    except SegDistillError as exc:
        print(f"segdistill: error: {exc}", file=sys.stderr)
        return 2
    return 0


def exit_without_teardown(code: int) -> None:
    """End `python -m segdistill.cli` (how the workflow's jobs run it) without the interpreter's teardown.

    Why: after a job's outputs are written and closed, tearing down paddle's C++ objects and modules takes about
    0.4 s of every job (`python -c "import segdistill.trainer"` 1.8 s, 1.4 s ending with `os._exit`), paid by
    each of a study's training and teacher-output jobs. Everything segdistill writes is closed before `main`
    returns (atomic replaces, closed logs), so nothing is left to flush but the standard streams. A process that
    still has children (data-loader workers) exits the normal way, which shuts them down."""
    import multiprocessing

    if multiprocessing.active_children():
        sys.exit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_without_teardown(main())
