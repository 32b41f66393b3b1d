"""The profiles and the rules' resource declarations that the local and SLURM runs depend on."""

from __future__ import annotations

import re

import pytest
import yaml

from conftest import REPO

RULE_FILES = sorted((REPO / "workflow" / "rules").glob("*.smk"))


def _rules() -> dict[str, str]:
    """Rule name -> the text of its definition, over every workflow/rules/*.smk."""
    rules = {}
    for path in RULE_FILES:
        parts = re.split(r"^rule (\w+):\n", path.read_text(), flags=re.MULTILINE)
        rules.update(zip(parts[1::2], (body.split("\n\n\n")[0] for body in parts[2::2])))
    return rules


@pytest.mark.parametrize("rule", sorted(_rules()))
def test_every_rule_declares_threads_memory_and_runtime(rule: str) -> None:
    body = _rules()[rule]
    missing = [what for what, pattern in (("threads", r"^\s+threads:"), ("mem_mb", r"^\s+mem_mb="),
                                          ("runtime", r"^\s+runtime=")) if not re.search(pattern, body, re.M)]
    assert not missing, f"rule {rule} does not declare {', '.join(missing)} (SLURM would get the profile defaults)"
    assert re.search(r"^\s+log:", body, re.M), f"rule {rule} has no per-job log"


def test_slurm_profile_groups_each_sites_connected_rules_and_never_merges_components() -> None:
    """Snakemake 9.27 merges group components again at every DAG update (a resumed run resubmitted one group
    job over and over): only connected jobs are grouped, one component per group job."""
    profile = yaml.safe_load((REPO / "workflow/profiles/slurm/config.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert profile["groups"] == {"index": "site", "select": "site"}
    assert profile["group-components"] == {"site": 1}
    assert "slurm_account" not in profile["default-resources"], \
        "an account is checked with sacctmgr, which needs accounting: leave it for the user to set"
    for key in ("rerun-incomplete", "keep-going"):
        assert profile[key] is True


def test_local_profile_resumes_and_keeps_going() -> None:
    profile = yaml.safe_load((REPO / "workflow/profiles/default/config.yaml").read_text())
    assert profile["rerun-incomplete"] is True and profile["keep-going"] is True and profile["cores"] >= 1


def test_no_profile_copies_job_logs_past_the_phi_boundary() -> None:
    """show-failed-logs would print a failed PHI-side job's log (work/phi/logs/) to the console and
    .snakemake/log/ (and logs/slurm/ on a cluster): every profile keeps it off."""
    import yaml

    for profile in sorted((REPO / "workflow" / "profiles").glob("*/config.yaml")):
        assert yaml.safe_load(profile.read_text()).get("show-failed-logs") is False, profile


def test_a_config_error_names_the_key_never_the_value() -> None:
    """A local id typed as an suv_overrides key (or free text in a reason) must not be echoed to the console:
    the message names the key path and the broken rule only. The shipped configs fit the schema."""
    import yaml

    from palmares_radiomics.configcheck import check_config, config_problem
    from palmares_radiomics.errors import ConfigError

    schema = REPO / "workflow" / "schemas" / "config.schema.yaml"
    for name in ("config.yaml", "demo.yaml"):
        assert config_problem(yaml.safe_load((REPO / "config" / name).read_text()), schema) is None, name
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["suv_overrides"] = {"0012345": {"weight_kg": 74.4, "reason": "Mario Rossi said so"}}
    with pytest.raises(ConfigError, match=r"^the configuration does not fit config.schema.yaml: suv_overrides breaks") \
            as caught:
        check_config(config, schema)
    assert "0012345" not in str(caught.value) and "Rossi" not in str(caught.value)
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["baseline_window"]["days_before"] = -5
    with pytest.raises(ConfigError, match=r"baseline_window/days_before breaks the schema's 'minimum' rule"):
        check_config(config, schema)
