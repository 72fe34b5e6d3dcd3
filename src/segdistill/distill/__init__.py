"""Distillation, wired as small named parts (as in mmrazor): recorders capture tensors by layer name,
connectors align student tensors to the teacher's, losses (segdistill.losses) compare them, and the Distiller
wires terms from YAML together; `build_distiller` makes one from a patched teacher config."""

from segdistill.distill.distiller import Distiller, build_distiller
from segdistill.distill.terms import DistillTerm, parse_terms, read_terms_file, resolve_terms, terms_from_paddleseg

__all__ = [
    "DistillTerm",
    "Distiller",
    "build_distiller",
    "parse_terms",
    "read_terms_file",
    "resolve_terms",
    "terms_from_paddleseg",
]
