"""What the benches share: the work folder's set-up, the trainer over it, and the child processes they measure.

A bench's parent process imports nothing heavy (on Linux a child started by exec starts its ru_maxrss at its
parent's peak, so a parent holding paddle would raise every child's number); it runs each configuration as
`<bench script> --child NAME --work FOLDER --child-result FILE` (`Child`, `run_child_script`), and the child
builds what it measures over the prepared folder (`prepare`, `work_trainer`). The benches import this module as
`import harness` (they run as scripts, so their folder is on the path).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TEACHER = ROOT / "config/paddleseg/cpu/deeplabv3p_resnet50_os8_synthetic_64x64_teacher.yml"
DEFAULT_STUDENT = ROOT / "config/paddleseg/cpu/deeplabv3p_resnet18_os8_synthetic_64x64_student.yml"


# -- child side: set-up and the trainer over the work folder -------------------------------------------------


def maxrss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def vmhwm_kb() -> int:
    """The process's own high-water mark (Linux), a cross-check of ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def write_json(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def prepare(work: Path, spec: dict) -> dict:
    """Configs resized to --size, a generated data set, and teacher weights with a patched teacher config."""
    from segdistill.paddle_env import paddle

    from segdistill.data.synthetic import generate
    from segdistill.paddleseg_yaml import build_model, patch_teacher, read_yaml, write_yaml
    from segdistill.trainer import seed_everything

    size, batch = spec["size"], spec["batch"]
    paths = {}
    for role in ("student", "teacher"):
        dic = read_yaml(spec[f"{role}_config"])
        for key in ("train_dataset", "val_dataset"):
            for t in dic[key].get("transforms", []):
                if t.get("type") == "Resize":
                    t["target_size"] = [size, size]
            dic[key]["dataset_root"] = str(work / "data")
        # Speed and memory do not depend on the weights' values; never reach for a download.
        if isinstance(dic["model"].get("backbone"), dict):
            dic["model"]["backbone"]["pretrained"] = None
        dic["model"]["pretrained"] = None
        dic["batch_size"] = batch
        path = work / f"{role}.yml"
        write_yaml(dic, path)
        paths[role] = path
    # Enough train images for one batch (70 % of the set goes to train).
    generate(work / "data", num_images=max(8, 2 * batch + 4), size=size, seed=0)
    seed_everything(spec["seed"])
    teacher = build_model(read_yaml(paths["teacher"]), paths["teacher"])
    paddle.save(teacher.state_dict(), str(work / "teacher.pdparams"))
    patch_teacher(paths["teacher"], work / "teacher.pdparams", work / "teacher_patched.yml")

    from importlib.metadata import version

    return {"paddle": paddle.__version__, "paddleseg": version("paddleseg"), "paddleslim": version("paddleslim")}


def work_trainer(work: Path, spec: dict, terms=None, run: str = "run", iters=None, teacher_outputs=None):
    """A Trainer over a prepared work folder (`prepare`: student.yml, data/, teacher_patched.yml): the student
    alone (`terms` None) or distilled with `terms`, from the online teacher or a cache folder; modes set as
    Trainer.run() sets them before its loop. The benches of this folder build their runs with it."""
    from segdistill.trainer import Trainer, TrainSpec

    kw = {}
    if terms is not None:
        kw = {"teacher_config": str(work / "teacher_patched.yml"), "distill_terms": terms}
    if teacher_outputs is not None:
        kw["teacher_outputs"] = str(teacher_outputs)
    t = Trainer(
        TrainSpec(
            config=str(work / "student.yml"),
            save_dir=str(work / run),
            seed=spec["seed"],
            data_root=str(work / "data"),
            batch_size=spec["batch"],
            iters=iters,
            do_eval=False,
            pretrained_backbone=False,
            **kw,
        ),
        log=lambda msg: None,
    )
    t.net.train()
    return t


def batch(work: Path, spec: dict):
    """The same batch for every configuration: the keyed training stream's first batch."""
    from segdistill.paddle_env import paddle

    from segdistill.data.stream import KeyedStream
    from segdistill.paddleseg_yaml import build, read_yaml

    dic = read_yaml(work / "student.yml")
    ds = build(dic, work / "student.yml").train_dataset
    images, labels = KeyedStream(ds, spec["batch"], spec["seed"]).batch(1)
    return paddle.to_tensor(images), paddle.to_tensor(labels)


def teacher_model(work: Path):
    from segdistill.paddleseg_yaml import build_model, read_yaml

    return build_model(read_yaml(work / "teacher_patched.yml"), work / "teacher_patched.yml")


# -- parent side: stdlib only -------------------------------------------------------------------------------


class Child:
    """`script --child NAME` in its own process; its peak RSS comes from wait4, i.e. that process alone. It writes
    its result to `result_<name><tag>.json` in `work`, its output to `log_<name><tag>.txt`."""

    def __init__(self, script, name: str, work: Path, timeout: float, tag: str = ""):
        self.name, self.timeout = name, timeout
        self.result = work / f"result_{name}{tag}.json"
        self.log = work / f"log_{name}{tag}.txt"
        cmd = [sys.executable, str(Path(script).resolve()), "--child", name, "--work", str(work), "--child-result"]
        with open(self.log, "w") as fh:
            self.proc = subprocess.Popen([*cmd, str(self.result)], stdout=fh, stderr=subprocess.STDOUT, cwd=str(ROOT))
        self.deadline = time.monotonic() + timeout
        self.maxrss_kb = None

    def done(self) -> bool:
        """Whether the child has ended well; an error quoting the end of its log when it failed or outlived its
        time."""
        pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
        if not pid:
            if time.monotonic() > self.deadline:
                self.kill()
                raise RuntimeError(f"{self.name} took longer than {self.timeout:.0f} s; log: {self.log}")
            return False
        self.proc.returncode = os.waitstatus_to_exitcode(status)  # keeps Popen from waiting on a reaped child
        self.maxrss_kb = usage.ru_maxrss
        if self.proc.returncode != 0 or not self.result.exists():
            tail = self.log.read_text()[-3000:]
            raise RuntimeError(f"{self.name} failed (exit {self.proc.returncode}):\n{tail}")
        return True

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            os.wait4(self.proc.pid, 0)
            self.proc.returncode = -9


def cpu_busy(seconds: float = 1.0) -> float:
    """Fraction of all CPUs busy over `seconds` (Linux /proc/stat); with no child of ours running, that is the
    load other programs put on the machine."""

    def sample():
        vals = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
        return sum(vals), idle

    try:
        t0, i0 = sample()
        time.sleep(seconds)
        t1, i1 = sample()
    except (OSError, ValueError, IndexError):
        return float("nan")
    return round(1.0 - (i1 - i0) / max(1, t1 - t0), 3)


def parse_or_run_child(parser, argv, run_child):
    """A bench's arguments, or None once it has run as the child it was started as (`Child`: --child NAME --work W
    --child-result F; `run_child(name, work, result)`)."""
    import argparse

    for flag in ("--child", "--work", "--child-result"):
        parser.add_argument(flag, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_child(args.child, Path(args.work), Path(args.child_result))
        return None
    return args


def run_child_script(script, name: str, work: Path, timeout: float) -> tuple[dict, int]:
    """Run `script --child NAME` to its end: (the JSON it wrote, its peak RSS in kB from wait4)."""
    child = Child(script, name, work, timeout)
    try:
        while not child.done():
            time.sleep(0.05)
    finally:
        child.kill()
    return json.loads(child.result.read_text()), child.maxrss_kb
