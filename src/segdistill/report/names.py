"""The report's names, defined once and importable without pandas or paddle (the command line and the
workflow read them): the metrics, the headline metric, the headline split's default and the selection split."""

METRICS = ("miou", "acc", "kappa", "dice")
# The metric every verdict, family of comparisons, choice and figure is about; the others are secondary.
HEADLINE_METRIC = "miou"
# The default of `report.split`; the schema's default must agree (tests/test_report_many_arms.py checks it).
HEADLINE_SPLIT = "test"
# The trainer keeps each run's best checkpoint by its mIoU on the val split (PaddleSeg's `val_dataset`), so
# numbers on that split are biased upward; headlines belong on a split that took no part in any choice.
SELECTION_SPLIT = "val"
