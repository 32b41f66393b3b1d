"""Check the study configuration against its JSON schema with a message that never repeats the config's values.

Snakemake's own ``validate`` quotes the offending part of the configuration, which can hold local patient
ids or free text (a ``suv_overrides`` key typed as a hospital id, a reason naming someone): those must not
reach the console or ``.snakemake/log/``. Here the message names the key path and the rule broken, no value.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

from .errors import ConfigError


def config_problem(config: Mapping[str, Any], schema_path: str | Path) -> str | None:
    """The first schema violation of ``config`` as "key path: rule (key description)", or None when it fits."""
    schema = yaml.safe_load(Path(schema_path).read_text(encoding="utf-8"))
    errors = sorted(Draft202012Validator(schema).iter_errors(dict(config)), key=lambda e: list(map(str, e.path)))
    if not errors:
        return None
    error = errors[0]
    where = "/".join(str(p) for p in error.path) or "(top level)"
    if error.validator in ("propertyNames", "additionalProperties", "pattern") and error.path and \
            str(error.path[0]) == "suv_overrides":
        where = "suv_overrides"  # its keys are patient identifiers: never echoed
    description = error.schema.get("description", "") if isinstance(error.schema, dict) else ""
    rule = f"breaks the schema's '{error.validator}' rule"
    return f"the configuration does not fit {Path(schema_path).name}: {where} {rule}" + (
        f" ({description})" if description else "")


def check_config(config: Mapping[str, Any], schema_path: str | Path) -> None:
    """Raise ConfigError naming the key path and the broken rule (never a value) when ``config`` does not fit."""
    problem = config_problem(config, schema_path)
    if problem:
        raise ConfigError(problem)


#: Optional parts of the install (pyproject ``[project.optional-dependencies]``): extra -> (module, what needs it).
EXTRAS = {"harmonise": ("neuroCombat", "ComBat harmonisation (config harmonisation.combat: true)")}


def require_extra(extra: str) -> None:
    """Raise ConfigError saying how to install ``extra`` when its module is missing (a cheap look-up, no import)."""
    module, feature = EXTRAS[extra]
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"{feature} needs {module}, which is not installed: install the project with its "
                          f"'{extra}' extra (`.venv/bin/python -m pip install -e '.[{extra}]'`; `make install` and "
                          "environment.yml include it), or turn the feature off")


def check_extras(config: Mapping[str, Any]) -> None:
    """Raise ConfigError, before anything runs, when the config turns on a feature whose extra is not installed."""
    if config.get("harmonisation", {}).get("combat"):
        require_extra("harmonise")
