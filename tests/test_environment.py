"""environment.yml (conda users) and pyproject.toml (pip, CI) must name the same packages."""

from __future__ import annotations

import re
import tomllib

import yaml

from conftest import REPO


def _name(requirement: str) -> str:
    """Normalised distribution name of a requirement string (``SimpleITK>=2.4`` → ``simpleitk``)."""
    return re.split(r"[<>=!~ ;\[]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_names_the_same_packages_as_pyproject() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {_name(r) for r in pyproject["dependencies"] + pyproject["optional-dependencies"]["test"]}
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    conda, pip = set(), set()
    for entry in env["dependencies"]:
        if isinstance(entry, dict):
            pip |= {_name(r) for r in entry["pip"] if not r.startswith("-e")}
        else:
            conda.add(_name(entry))
    conda -= {"python", "pip"}
    assert conda | pip == declared, f"only in environment.yml: {sorted((conda | pip) - declared)}; " \
                                    f"only in pyproject: {sorted(declared - (conda | pip))}"
    assert "conda-forge" in env["channels"]
