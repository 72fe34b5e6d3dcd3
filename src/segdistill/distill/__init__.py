"""Distillation, wired as small named parts (as in mmrazor): recorders capture tensors by layer name,
connectors align student tensors to the teacher's, losses (segdistill.losses) compare them, and the Distiller
wires terms from YAML together."""

from segdistill.distill.terms import DistillTerm, parse_terms, terms_from_paddleseg
from segdistill.distill.distiller import Distiller

__all__ = ["DistillTerm", "Distiller", "parse_terms", "terms_from_paddleseg"]
