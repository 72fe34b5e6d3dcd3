"""Import paddle the one way that is safe here, and keep its start-up noise out of user logs.

Import `paddle` from this module instead of directly: zlib must be imported before paddle (paddle 2.6 on some
Pythons corrupts zlib's state otherwise, breaking scipy/sklearn imports that paddleseg does).
"""

import logging
import os
import warnings
import zlib  # noqa: F401  (must precede paddle, see above)

os.environ.setdefault("GLOG_minloglevel", "2")
warnings.filterwarnings("ignore", module=r"paddle(seg|slim)?\..*")
warnings.filterwarnings("ignore", message=r".*distutils.*")

_root_handlers = list(logging.getLogger().handlers)
import paddle  # noqa: E402

# paddle installs a handler on the root logger at import, which doubles every log line of the host program
# (Snakemake's among them); put the root logger back as it was.
for _h in list(logging.getLogger().handlers):
    if _h not in _root_handlers:
        logging.getLogger().removeHandler(_h)

# paddleseg prints every built component's config at INFO to stdout; keep its errors only (segdistill reports
# what matters itself).
try:
    from paddleseg.utils import logger as _seg_logger

    _seg_logger.log_level = 0
except ImportError:  # paddleseg is optional for the parts that only need paddle
    pass

__all__ = ["paddle"]
