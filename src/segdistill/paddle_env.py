"""Import paddle the one way that is safe here, and keep its start-up noise out of user logs.

Import `paddle` from this module instead of directly: zlib must be imported before paddle (paddle 2.6 on some
Pythons corrupts zlib's state otherwise, breaking scipy/sklearn imports that paddleseg does).
"""

import contextlib
import io
import logging
import os
import sys
import types
import warnings
import zlib  # noqa: F401  (must precede paddle, see above)

os.environ.setdefault("GLOG_minloglevel", "2")
warnings.filterwarnings("ignore", module=r"paddle(seg|slim)?\..*")
warnings.filterwarnings("ignore", message=r".*distutils.*")

_root_handlers = list(logging.getLogger().handlers)
# With OMP_NUM_THREADS above 1 (segdistill.threads sets the cores a command may use) paddle prints a warning at
# import meant for its data-parallel parameter servers, whose advice does not apply here; drop those two lines.
_import_stderr = io.StringIO()
try:
    with contextlib.redirect_stderr(_import_stderr):
        import paddle  # noqa: E402
finally:
    sys.stderr.write(
        "".join(
            line
            for line in _import_stderr.getvalue().splitlines(keepends=True)
            if not line.startswith(("WARNING: OMP_NUM_THREADS set to", "PLEASE USE OMP_NUM_THREADS WISELY"))
        )
    )

# paddle installs a handler on the root logger at import, which doubles every log line of the host program
# (Snakemake's among them); put the root logger back as it was.
for _h in list(logging.getLogger().handlers):
    if _h not in _root_handlers:
        logging.getLogger().removeHandler(_h)


class _Deferred(types.ModuleType):
    """Stands for a module until one of its attributes is used, then imports the real one and hands that over.

    Why: paddleseg's `utils/metrics.py` runs `import sklearn.metrics` at import time, for `auc_roc` alone, which
    segdistill never calls; importing scikit-learn is about 1.2 of the 3 seconds every job spends importing
    paddle and paddleseg (measured with `python -X importtime`). The stand-ins are in `sys.modules` only while
    paddleseg is imported, so any later `import sklearn` gets the real package."""

    def __getattr__(self, name):
        import importlib

        return getattr(importlib.import_module(self.__name__), name)


def _import_paddleseg_without_sklearn():
    stand_ins = {"sklearn": _Deferred("sklearn"), "sklearn.metrics": _Deferred("sklearn.metrics")}
    stand_ins["sklearn"].__dict__["metrics"] = stand_ins["sklearn.metrics"]
    placed = [name for name in stand_ins if name not in sys.modules]
    sys.modules.update({name: stand_ins[name] for name in placed})
    try:
        import paddleseg  # noqa: F401
    finally:
        for name in placed:
            if sys.modules.get(name) is stand_ins[name]:
                del sys.modules[name]


# paddleseg prints every built component's config at INFO to stdout; keep its errors only (segdistill reports
# what matters itself).
try:
    _import_paddleseg_without_sklearn()
    from paddleseg.utils import logger as _seg_logger

    _seg_logger.log_level = 0
except ImportError:  # paddleseg is optional for the parts that only need paddle
    pass

__all__ = ["paddle"]
