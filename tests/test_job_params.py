"""What the jobs' params carry of a study (segdistill.schema.job_view): today's every key as it is, and a key the
schema gains later left out while it is at its default, so a study finished before it plans no job after it."""

import copy

import pytest
import yaml
from snakemake.utils import validate

from conftest import ROOT, TINY_STUDY
from segdistill import schema

SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
STUDIES = sorted((ROOT / "config").glob("*.yaml")) + [TINY_STUDY]


def validated(cfg: dict, schema_file) -> dict:
    """`cfg` with the schema's defaults filled in, as the workflow holds it after parsing."""
    cfg = copy.deepcopy(cfg)
    validate(cfg, str(schema_file))
    return cfg


def later_schema(tmp_path):
    """Today's schema plus what a later version might add: a training option, a data option nested two levels
    down, and a new section whose keys all have defaults."""
    s = yaml.safe_load(SCHEMA.read_text())
    s["properties"]["train"]["properties"]["later_option"] = {"type": "number", "default": 0.5}
    synthetic = s["properties"]["data"]["properties"]["synthetic"]["properties"]
    synthetic["later_shape"] = {"type": "string", "default": "disc"}
    s["properties"]["later_section"] = {
        "type": "object",
        "default": {},
        "properties": {"size": {"type": "integer", "default": 4}},
    }
    path = tmp_path / "later.schema.yaml"
    path.write_text(yaml.safe_dump(s, sort_keys=False))
    return path


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.name)
def test_todays_keys_are_carried_as_they_are(path):
    """Every key of today's schema is recorded: the view is the study itself, so no finished job's params move."""
    cfg = validated(yaml.safe_load(path.read_text()), SCHEMA)
    assert repr(schema.job_view(cfg, SCHEMA)) == repr(cfg)


def test_keys_the_schema_gains_later_are_left_out_at_their_default_and_carried_when_set(tmp_path):
    later = later_schema(tmp_path)
    cfg = yaml.safe_load(TINY_STUDY.read_text())
    today = schema.job_view(validated(cfg, SCHEMA), SCHEMA)
    at_default = validated(cfg, later)
    assert at_default["train"]["later_option"] == 0.5 and at_default["later_section"] == {"size": 4}  # filled in
    assert at_default["data"]["synthetic"]["later_shape"] == "disc"
    assert repr(schema.job_view(at_default, later)) == repr(today)

    changed = copy.deepcopy(cfg)
    changed.setdefault("train", {})["later_option"] = 0.25
    changed["later_section"] = {"size": 8}
    view = schema.job_view(validated(changed, later), later)
    assert view["train"]["later_option"] == 0.25 and view["later_section"] == {"size": 8}
    assert "later_shape" not in view["data"]["synthetic"]
    # A recorded key at its default stays: studies finished before today recorded it.
    assert view["train"]["log_iters"] == today["train"]["log_iters"]
