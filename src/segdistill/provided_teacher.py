"""A trained teacher the user brings (`teacher.weights`): fetch it, check it strictly, put it where runs look.

A `.pdparams` file is a Python pickle, and unpickling runs whatever code the file carries. So a teacher named by
URL is downloaded only with a pinned SHA-256 (and refused without one, see `study.check_teacher_weights`); a
local file is the user's own and its SHA-256 is checked when given. Either way the weights must fit the teacher
config exactly (every key, every shape) before any distillation uses them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from segdistill.atomic import replacing, write_json
from segdistill.errors import SegDistillError


def download_path(url: str, download_dir: str = "resources/downloads") -> Path:
    """Where a teacher named by URL is cached (one folder per URL, so two URLs never share a file)."""
    from segdistill.study import url_key

    name = url.split("?")[0].rstrip("/").rsplit("/", 1)[-1] or "teacher.pdparams"
    return Path(download_dir) / f"teacher-{url_key(url)}" / name


def provide_teacher(
    weights: str, sha256: str | None, config: str, out: str, record: str, download_dir: str = "resources/downloads"
) -> dict:
    """Fetch (URL) or take (path) the teacher weights, load them strictly into `config`'s model, copy to `out`.

    `record` gets a JSON with the source, its SHA-256 and the config it was checked against. Nothing is written
    at `out` unless every check passed.
    """
    from segdistill.data import download, sha256_of
    from segdistill.paddleseg_yaml import build_model, experiment_dict, is_url, load_weights
    from segdistill.study import check_teacher_weights

    check_teacher_weights(weights, sha256)
    if is_url(weights):
        local = download_path(weights, download_dir)
        if not (local.is_file() and sha256_of(local) == sha256):
            download(weights, local, sha256=sha256)
        seen = sha256
    else:
        local = Path(weights)
        seen = sha256_of(local)
        if sha256 and seen != sha256:
            raise SegDistillError(f"teacher.weights {local}: its SHA-256 is {seen} but teacher.sha256 is {sha256}")
    # The whole model is in the file, backbone included: no backbone download, no pretrained hook.
    dic = experiment_dict(config, pretrained_backbone=False)
    dic["model"]["pretrained"] = None
    model = build_model(dic, config)
    load_weights(model, local, source=f"teacher.weights ({weights}) for {config}")
    with replacing(out) as tmp:
        shutil.copyfile(local, tmp)
    info = {
        "source": weights,
        "sha256": seen,
        "config": str(config),
        "model": str(out),
        "check": "every parameter of the teacher config present with its shape, nothing else",
    }
    write_json(record, info)
    print(f"teacher weights {weights} (sha256 {seen}) fit {config}; copied to {out}")
    return info
