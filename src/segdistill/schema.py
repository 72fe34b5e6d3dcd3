"""The study file against its JSON schema, as one short message: the key path, the value, what is allowed.

Snakemake's own `validate` reports a failure with the whole schema (hundreds of lines) after the one line that
matters; the workflow asks here first, so a typo is one line naming the key, its closest known spelling and the
keys allowed there. Paddle-free: it runs when the workflow is parsed.
"""

from __future__ import annotations

import difflib


def _path(error) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "the study file"


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _unknown_keys(error) -> str:
    """An `additionalProperties: false` failure: each unknown key with its closest allowed spelling."""
    allowed = sorted(error.schema.get("properties") or {})
    where = _path(error)
    prefix = "" if where == "the study file" else f"{where}."
    parts = []
    for key in sorted(k for k in error.instance if k not in allowed):
        close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.5)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        parts.append(f"{prefix}{key}: unknown key{hint}")
    return "; ".join(parts) + f". Allowed {'at the top level' if not prefix else 'in ' + where}: {', '.join(allowed)}"


def describe(error) -> str:
    """One line for a jsonschema ValidationError."""
    where, kind, schema = _path(error), error.validator, error.schema
    if kind == "additionalProperties" and isinstance(error.instance, dict) and "properties" in schema:
        return _unknown_keys(error)
    if kind == "enum":
        return f"{where}: {_short(error.instance)} is not allowed; allowed: {', '.join(map(str, schema['enum']))}"
    if kind == "type":
        expected = schema["type"] if isinstance(schema["type"], str) else " or ".join(schema["type"])
        return f"{where}: {_short(error.instance)} is not of type {expected}"
    if kind == "required":
        missing = [k for k in error.validator_value if k not in error.instance]
        return f"{where}: missing required key(s) {', '.join(missing)}"
    text = f"{where}: {_short(error.instance)}: {error.message if len(error.message) < 120 else kind + ' failed'}"
    if schema.get("description"):
        text += f" ({' '.join(str(schema['description']).split())})"
    return text


def problem(config: dict, schema_file) -> str | None:
    """None when `config` satisfies the schema in `schema_file` (YAML), else one line for its most telling error:
    an unknown key first (a typo also makes the key it misspells look missing), then jsonschema's best match."""
    import jsonschema
    import yaml

    with open(schema_file) as fh:
        schema = yaml.safe_load(fh)

    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = list(validator.iter_errors(config))
    if not errors:
        return None
    unknown = [e for e in errors if e.validator == "additionalProperties"]
    first = min(unknown, key=lambda e: len(e.absolute_path)) if unknown else jsonschema.exceptions.best_match(errors)
    return describe(first)


def job_view(config: dict, schema_file) -> dict:
    """The study as the workflow's jobs carry it in their params: a key the schema gained after
    segdistill.recorded_keys, at its default, is left out (a new section whose keys all are, too).

    Why: Snakemake reruns a job whose params changed (its `params` trigger), and a study finished before an option
    existed recorded its params without it. Left out at its default, the option keeps that study's jobs done, as
    it keeps its runs' keys (segdistill.specs: an identity field at its default leaves the key as it was); set to
    anything else, it is in the params and the jobs it concerns run again. A script takes such a key's default
    where it is missing (a spec's field default, which the schema's must equal: tests/test_specs.py)."""
    import yaml

    from segdistill.recorded_keys import RECORDED_KEYS

    with open(schema_file) as fh:
        schema = yaml.safe_load(fh)
    return _view(config, schema, "", RECORDED_KEYS)


def _view(value: dict, schema: dict, prefix: str, recorded: frozenset) -> dict:
    props = schema.get("properties") or {}
    out = {}
    for key, item in value.items():
        path, prop = f"{prefix}{key}", props.get(key)
        if isinstance(prop, dict) and isinstance(item, dict) and "properties" in prop:
            item = _view(item, prop, path + ".", recorded)
            if path not in recorded and not item:
                continue
        elif path not in recorded and isinstance(prop, dict) and "default" in prop and item == prop["default"]:
            continue
        out[key] = item
    return out
