"""Load CloudFormation/SAM YAML with its short-form tags (``!Ref``, ``!Sub``, ``!GetAtt``...).

Each tag becomes the long form CloudFormation itself uses: ``!Ref X`` -> ``{"Ref": "X"}``,
``!GetAtt A.B`` -> ``{"Fn::GetAtt": ["A", "B"]}``, ``!Sub s`` -> ``{"Fn::Sub": "s"}``,
``!Condition C`` -> ``{"Condition": "C"}``. Nothing is evaluated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

__all__ = ["load_template", "loads_template"]


class _CfnLoader(yaml.SafeLoader):
    """A SafeLoader that also accepts CloudFormation's intrinsic-function tags."""


def _intrinsic(loader: _CfnLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = suffix if suffix in ("Ref", "Condition") else f"Fn::{suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if name == "Fn::GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _intrinsic)


def loads_template(text: str) -> dict[str, Any]:
    """Parse a template given as text."""
    document = yaml.load(text, Loader=_CfnLoader)  # a SafeLoader subclass
    if not isinstance(document, dict):
        raise ValueError("a CloudFormation template is a mapping")
    return document


def load_template(path: str | Path) -> dict[str, Any]:
    """Parse the template at ``path``."""
    return loads_template(Path(path).read_text(encoding="utf-8"))
