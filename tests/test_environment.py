"""environment.yml (conda users) and pyproject.toml (pip, CI) must name the same packages, with the same versions."""

from __future__ import annotations

import re
import tomllib

import yaml

from conftest import REPO


def _name(requirement: str) -> str:
    """Normalised distribution name of a requirement string (``SimpleITK>=2.4`` → ``simpleitk``)."""
    return re.split(r"[<>=!~ ;\[]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _requirements(requirement: str) -> tuple[str, str]:
    """(name, version constraints) of a pip or conda requirement; conda's ``=1.2`` pin is pip's ``==1.2``."""
    text = requirement.split("#", 1)[0].replace(" ", "")
    name = _name(text)
    constraints = text[len(name):].split(";", 1)[0]
    if re.fullmatch(r"=[^=].*", constraints):
        constraints = "=" + constraints
    return name, ",".join(sorted(constraints.split(","))) if constraints else ""


def _declared() -> tuple[dict[str, str], dict[str, str]]:
    """(pyproject's requirements, environment.yml's), name -> version constraints."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = [r for group in pyproject["optional-dependencies"].values() for r in group]
    declared = dict(_requirements(r) for r in pyproject["dependencies"] + extras)
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    conda: dict[str, str] = {}
    for entry in env["dependencies"]:
        requirements = [r for r in entry["pip"] if not r.startswith("-e")] if isinstance(entry, dict) else [entry]
        conda.update(_requirements(r) for r in requirements)
    for tool in ("python", "pip"):
        conda.pop(tool, None)
    return declared, conda


def test_environment_yml_pins_the_same_versions_as_pyproject() -> None:
    declared, conda = _declared()
    differ = {name: (declared[name], conda[name]) for name in declared.keys() & conda.keys()
              if declared[name] != conda[name]}
    assert not differ, f"version constraints differ (pyproject, environment.yml): {differ}"


def test_environment_yml_names_the_same_packages_as_pyproject() -> None:
    declared, conda = _declared()
    assert conda.keys() == declared.keys(), f"only in environment.yml: {sorted(conda.keys() - declared.keys())}; " \
                                            f"only in pyproject: {sorted(declared.keys() - conda.keys())}"
    assert "conda-forge" in yaml.safe_load((REPO / "environment.yml").read_text())["channels"]


def test_the_installed_packages_satisfy_the_declared_versions() -> None:
    """What runs is what is declared: every requirement of pyproject.toml (and its test extra) is installed at a
    version its constraints allow (``packaging`` comes with pytest)."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.specifiers import SpecifierSet

    declared, _ = _declared()
    wrong = {}
    for name, constraints in declared.items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            wrong[name] = "not installed"
            continue
        if installed not in SpecifierSet(constraints):
            wrong[name] = f"{installed} does not satisfy {constraints}"
    assert not wrong, wrong
