"""The `segdistill` command line: what a person runs by hand, and the workflow's jobs that run in a process.

A subcommand that runs a workflow step parses into that step's spec (segdistill.specs: its flags are made from the
spec's fields) and calls the engine function the workflow's script calls (tests/test_cli_steps.py).
Training: train, distill-train (the tutorial's `distill_train.py` flags), teacher-outputs, patch-teacher,
fetch-backbone, layers. Evaluation and report: evaluate, predict, stats, cost, figure.
Environment: doctor (Paddle build, CUDA, devices, installed stack vs the pins).
A SegDistillError prints one line and exits 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing

from segdistill import threads
from segdistill.errors import SegDistillError
from segdistill.specs import KINDS, STEPS, CostSpec, TrainSpec


def _flag(parser, name: str, dest=None, **kw):
    """PaddleSeg spells flags with underscores; accept both `--save_dir` and `--save-dir`."""
    names = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
    parser.add_argument(*names, dest=dest or name, **kw)


def _spec_flags(p, cls, skip=(), spec_file=True, block=None) -> None:
    """Flags made from the fields of a job spec (segdistill.specs): a field's type gives the flag's type, its
    metadata the help, choices and nargs; a bool is a switch (`--no_<name>` when it defaults to true); a block of
    fields (a dataclass, e.g. `evaluate`) gives `--<block>_<name>` flags. Flags not given stay out of the
    namespace (default SUPPRESS), so `_spec` can tell them from defaults."""
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
        if meta.get("positional"):
            p.add_argument(dest, **{k: v for k, v in kw.items() if k != "default"})
        elif names:
            p.add_argument(*names, dest=dest, **kw)
        else:
            _flag(p, name, dest=dest, **kw)
    if spec_file:
        _flag(p, "spec", default=None, help="a job spec (JSON) written by the workflow, instead of the flags above")
    if block is None:
        p.set_defaults(spec_class=cls, spec_parser=p)


def _spec_values(cls, args=None, block=None) -> dict:
    """The fields' command-line defaults (`args` None), else the flags given in `args`; a block's as a dict."""
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
        if isinstance(defaults.get(name), dict):
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
    to_stdout, spec.out = spec.out == "-", None if spec.out == "-" else spec.out
    result = evaluate_run(spec)
    if to_stdout:
        print(json.dumps(result, indent=2))


def cmd_layers(args):
    from segdistill.layers import list_layers

    print(list_layers(args.config, tuple(args.size) if args.size else None, depth=args.depth))


def cmd_step(args):
    from segdistill.specs import run_step

    result = run_step(_spec(args))
    if isinstance(result, str):  # a path made (fetch-backbone)
        print(result)


def cmd_figure(args):
    from segdistill.report.figure_table import FIGURES

    FIGURES[args.name].draw_from_flags(args.out, vars(args))


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
    """Subcommands: the jobs (train, teacher-outputs, evaluate, cost: flags or the workflow's `--spec`), distill and
    look inside a model."""
    for kind, func in (("train", cmd_train), ("teacher-outputs", cmd_teacher_outputs), ("evaluate", cmd_evaluate)):
        p = sub.add_parser(kind, help=KINDS[kind].__doc__.split("\n")[0])
        _spec_flags(p, KINDS[kind])
        p.set_defaults(func=func)

    p = sub.add_parser("distill-train", help="PaddleSeg's deploy/slim/distill/distill_train.py, same flags")
    _flag(p, "teather_config", default=None, help="teacher config (the tutorial's spelling)")
    _flag(p, "teacher_config", default=None)
    _flag(p, "student_config", required=True)
    _spec_flags(p, TrainSpec, skip=("config", "teacher_config", "distill"), spec_file=False)
    p.set_defaults(func=cmd_distill_train)

    p = sub.add_parser("layers", help="every sublayer of a config's model with its output shape")
    p.add_argument("config")
    p.add_argument("--size", nargs=2, type=int, metavar=("H", "W"), default=None)
    p.add_argument("--depth", type=int, default=None, help="only names with at most this many dots")
    p.set_defaults(func=cmd_layers)


def _step_commands(sub) -> None:
    """Subcommands of one workflow step each, made from its spec: stats, patch-teacher, fetch-backbone, cost (a
    job on leased devices: `--spec`), and the report's figures (segdistill.report.figure_table)."""
    for kind, cls in {**STEPS, "cost": CostSpec}.items():
        p = sub.add_parser(kind, help=cls.__doc__)
        _spec_flags(p, cls, spec_file=cls is CostSpec)
        p.set_defaults(func=cmd_step)

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
MODEL_COMMANDS = "train distill-train teacher-outputs evaluate predict layers cost figure doctor".split()


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="segdistill", description=__doc__.split("\n")[0])
    ap.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = ap.add_subparsers(dest="command", required=True)
    _training_commands(sub)
    _step_commands(sub)
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


if __name__ == "__main__":
    from segdistill.jobs import exit_without_teardown

    exit_without_teardown(main())
