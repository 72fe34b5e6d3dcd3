"""What checking a teacher-output cache's files costs (size and SHA-256, `segdistill.distill.cache.verify_files`).

A distill job checks every tensor file it reads when it opens the cache, before its first step; the cache job
computes the same digests once after writing. This synthesizes a cache file of the size a study would store
(default: the optic-disc tutorial, 512x512 images, batch 4, 1000 iterations, 2 classes, float16 logits stored at
the DeepLabV3P head's output stride 4) and times both. The file is random data; hashing does not care.

    .venv/bin/python bench/cache_verify.py [--size 512 --batch 4 --iters 1000 --classes 2 --stride 4] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from segdistill.distill.cache import file_record, verify_files


def synthesize(path: Path, shape, dtype) -> None:
    """A `.npy` file of `shape` filled with random values, one iteration's rows at a time (bounded memory)."""
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=tuple(shape))
    rng = np.random.default_rng(0)
    for it in range(shape[0]):
        mm[it] = rng.standard_normal(shape[1:], dtype=np.float32).astype(dtype)
    mm.flush()
    del mm


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--iters", type=int, default=1000)
    ap.add_argument("--classes", type=int, default=2)
    ap.add_argument("--stride", type=int, default=4, help="output stride of the stored logits (1: full size)")
    ap.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where to write the scratch file (default: the system temp folder)")
    args = ap.parse_args(argv)
    side = args.size // args.stride
    shape = [args.iters, args.batch, args.classes, side, side]
    scratch = Path(tempfile.mkdtemp(prefix="cache-verify-", dir=args.dir))
    try:
        path = scratch / "logits.npy"
        synthesize(path, shape, np.dtype(args.dtype))
        record_s, verify_s = [], []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            record = file_record(path)
            record_s.append(time.perf_counter() - t0)
        manifest = {"tensors": {"logits": {"file": path.name, **record}}}
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            verify_files(scratch, manifest, ["logits"])
            verify_s.append(time.perf_counter() - t0)
    finally:
        shutil.rmtree(scratch)
    mb = record["size"] / 1e6
    out = {
        "shape": shape,
        "dtype": args.dtype,
        "file_bytes": record["size"],
        "file_mb": round(mb, 1),
        "record_s": [round(t, 3) for t in record_s],
        "verify_s": [round(t, 3) for t in verify_s],
        "verify_median_s": round(statistics.median(verify_s), 3),
        "verify_mb_per_s": round(mb / statistics.median(verify_s), 1),
    }
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
