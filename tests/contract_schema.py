"""The AsyncAPI document's payload schemas as JSON Schema validators, so the model-based
tests can hold every entry they see on either stream to the document itself."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import yaml
from jsonschema import Draft7Validator

SPEC = yaml.safe_load(
    (Path(__file__).resolve().parent.parent / "docs" / "asyncapi.yaml").read_text(encoding="utf-8")
)
_MESSAGES = SPEC["components"]["messages"]
HEALTH_EVENT = Draft7Validator(_MESSAGES["healthEvent"]["payload"])
SNAPSHOT = Draft7Validator(_MESSAGES["runtimeSnapshotUpdate"]["payload"])


def _text(fields: Mapping[bytes, bytes] | Mapping[str, str]) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in fields.items()
    }


def violations(
    validator: Draft7Validator, fields: Mapping[bytes, bytes] | Mapping[str, str]
) -> list[str]:
    """What in one stream entry the document does not allow (empty: it is valid)."""
    return [
        f"{'/'.join(map(str, e.path)) or '(entry)'}: {e.message}"
        for e in validator.iter_errors(_text(fields))
    ]
