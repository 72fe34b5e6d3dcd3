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

import paddle  # noqa: E402

# paddleseg logs every built component at INFO to stdout; our own logger says what matters.
logging.getLogger("paddleseg").setLevel(logging.WARNING)

__all__ = ["paddle"]
