"""User-facing errors.

A SegDistillError is a problem with the user's input (data, config, weights, layer names). The command line
prints its message alone, without a traceback, and exits with status 2; anything else is a bug and keeps its
traceback.
"""


class SegDistillError(Exception):
    """A problem with the user's input, explained in one message that names the file, key or layer."""
