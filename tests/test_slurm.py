"""The pipeline on a real SLURM cluster: jobs go through the scheduler with the resources the rules declare,
and the tables equal those of a local run.

Needs the single-node cluster that `make test-slurm` starts on localhost (.ci/slurm/); skipped otherwise
(``PALMARES_SLURM=1`` is set by that target). What SLURM did is read from its own records: the job
completion log (``jobcomp/filetxt``, always) and ``sacct`` (when the cluster has accounting).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from test_resume import TABLES
from test_workflow import run, snakemake_command  # noqa: F401 - `run` is the finished local run (fixture)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.environ.get("PALMARES_SLURM") != "1",
                                                   reason="needs the single-node SLURM of `make test-slurm`")]

#: The whole SLURM run is interrupted (SIGINT, which the SLURM plugin honours) after this long.
SLURM_RUN_LIMIT_S = 900
#: sacct (the cluster has accounting) or squeue (it has not); set by `make test-slurm`.
STATUS_COMMAND = os.environ.get("PALMARES_SLURM_STATUS", "sacct")
JOBCOMP_LOG = Path(os.environ.get("PALMARES_SLURM_DIR", "/tmp/palmares-slurm")) / "log" / "jobcomp.txt"
#: Dependency depth of each grouped rule inside its group job (index -> select); a job of one rule has a single level.
LEVEL = {"index": 0, "select": 1}
#: Rules that run in the main Snakemake process, never on the cluster (common.smk `localrules`).
LOCAL_RULES = {"clinical", "intake", "report"}


@dataclass(frozen=True, slots=True)
class Request:
    """CPUs, memory (MB) and time limit (minutes) of one job."""

    cpus: int
    mem_mb: int
    minutes: int


@pytest.fixture(scope="module")
def slurm_run(run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same study as the local run, run with `--profile workflow/profiles/slurm` on the cluster."""
    study = tmp_path_factory.mktemp("slurm")
    for name in ("cohort", "secret.key", "config.yaml"):
        (shutil.copytree if (run / name).is_dir() else shutil.copy)(run / name, study / name)
    command, env = snakemake_command("--slurm-init-seconds-before-status-checks", "5",
                                     "--slurm-status-command", STATUS_COMMAND, profile="slurm")
    # In two runs, as a resumed study: up to the intake, then the rest with the intake already done (the path on
    # which Snakemake 9.27's group components resubmitted one group job over and over: benchmarks/README.md).
    log = ""
    for until in (["--until", "intake"], []):
        result = subprocess.run(["timeout", "-s", "INT", "-k", "60", str(SLURM_RUN_LIMIT_S), *command, *until],
                                cwd=study, env=env, capture_output=True, text=True, timeout=SLURM_RUN_LIMIT_S + 120)
        log += result.stdout + result.stderr
        (study / "snakemake-slurm.log").write_text(log)
        assert result.returncode == 0, f"exit {result.returncode}:\n{result.stderr[-4000:]}"
    return study


def declared_requests(study: Path) -> dict[tuple[str, str], Request]:
    """What each rule declares for each job, as Snakemake evaluates it with the slurm profile
    (dry runs forcing every job; inputs present, so scaled resources use the real series sizes, and a
    rule that declares nothing gets the profile's defaults): (rule, wildcards) -> Request.

    Two dry runs: the PHI side up to the series selection, forced; then every rule after the intake
    checkpoint, forced, with the intake up to date (a forced checkpoint defers the jobs after it)."""
    text = ""
    for extra in (["--forceall", "--until", "select"],
                  ["--forcerun", "clinical", "patient", "tables", "report"]):
        command, env = snakemake_command("-n", *extra, profile="slurm")
        dry = subprocess.run(command, cwd=study, env=env, capture_output=True, text=True, timeout=600)
        assert dry.returncode == 0, dry.stderr[-3000:]
        if "--forcerun" in extra:  # the intake is up to date: every per-patient job is planned
            assert "checkpoint intake:" not in dry.stdout + dry.stderr, (dry.stdout + dry.stderr)[-6000:]
        text += dry.stdout + dry.stderr
    jobs: dict[tuple[str, str], Request] = {}
    for block in re.split(r"^\s*(?=(?:local)?rule \w+:$)", text, flags=re.MULTILINE)[1:]:
        rule = re.match(r"(?:local)?rule (\w+):", block).group(1)
        if rule == "all":  # the target rule: no resources, no job of its own
            continue
        wildcards = re.search(r"^\s*wildcards: (.*)$", block, re.MULTILINE)
        threads = re.search(r"^\s*threads: (\d+)$", block, re.MULTILINE)
        resources = dict(re.findall(r"(\w+)=([^,\s]+)", re.search(r"^\s*resources: (.*)$", block,
                                                                   re.MULTILINE).group(1)))
        jobs[(rule, wildcards.group(1) if wildcards else "")] = Request(
            int(threads.group(1)) if threads else 1, int(resources["mem_mb"]), int(resources["runtime"]))
    return jobs


def slurm_jobs(study: Path) -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """SLURM job id -> (rule or group name, the (rule, wildcards) it ran), from the per-job scheduler logs
    the slurm profile keeps under logs/slurm/<rule_name|group_name>/[<wildcards>/]<job id>.log."""
    jobs = {}
    for log in sorted((study / "logs" / "slurm").rglob("*.log")):
        text = log.read_text()
        members = set()
        for block in re.split(r"^\s*(?=rule \w+:$)", text, flags=re.MULTILINE)[1:]:
            wildcards = re.search(r"^\s*wildcards: (.*)$", block, re.MULTILINE)
            members.add((re.match(r"rule (\w+):", block).group(1), wildcards.group(1) if wildcards else ""))
        jobs[log.stem] = (log.relative_to(study / "logs" / "slurm").parts[0], sorted(members))
    return jobs


def recorded_by_slurm(study: Path) -> dict[str, tuple[str, Request]]:
    """SLURM job id -> (state, allocation) of every job this study submitted, from the job completion log."""
    records = {}
    for line in JOBCOMP_LOG.read_text().splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if fields.get("WorkDir") != str(study):
            continue
        tres = dict(item.split("=") for item in fields["Tres"].split(","))
        records[fields["JobId"]] = (fields["JobState"], Request(int(tres["cpu"]), _megabytes(tres["mem"]),
                                                                int(fields["TimeLimit"])))
    return records


def _megabytes(value: str) -> int:
    """A SLURM memory amount (``3018M``, ``8G``) in MB."""
    number, unit = float(value[:-1]), value[-1]
    return round(number * {"M": 1, "G": 1024, "T": 1024 * 1024}[unit])


def _minutes(limit: str) -> int:
    """A SLURM time limit (``[D-]HH:MM:SS``) in whole minutes."""
    days, _, clock = limit.rpartition("-")
    hours, minutes, _seconds = (int(part) for part in clock.split(":"))
    return (int(days or 0) * 24 + hours) * 60 + minutes


def expected_request(members: list[Request], levels: list[int], cores: int) -> tuple[Request, Request]:
    """Lowest and highest allocation Snakemake can ask for a job running ``members`` (equal for one member).

    Snakemake's group-job layering (``GroupResources.basic_layered``): each dependency level is cut into
    layers of at most ``cores`` threads, filled in order of decreasing runtime; the job asks for the widest
    layer's CPUs and memory and the sum of the layers' longest runtimes. Runtime and CPUs follow exactly
    from that; memory lies between the largest member and the ``cores`` largest of one level together
    (which members share a layer when runtimes tie depends on the DAG's order).
    """
    assert all(m.cpus == 1 for m in members), "every per-patient rule is single-threaded"
    by_level: dict[int, list[Request]] = {}
    for member, level in zip(members, levels):
        by_level.setdefault(level, []).append(member)
    minutes = sum(max(chunk) for jobs in by_level.values()
                  for runtimes in [sorted((m.minutes for m in jobs), reverse=True)]
                  for chunk in (runtimes[i:i + cores] for i in range(0, len(runtimes), cores)))
    cpus = min(cores, max(len(jobs) for jobs in by_level.values()))
    low = max(m.mem_mb for m in members)
    high = max(sum(sorted((m.mem_mb for m in jobs), reverse=True)[:cores]) for jobs in by_level.values())
    return Request(cpus, low, minutes), Request(cpus, high, minutes)


def test_slurm_run_gives_the_same_tables_as_the_local_run(slurm_run: Path, run: Path) -> None:
    for table in TABLES:
        assert (slurm_run / table).read_bytes() == (run / table).read_bytes(), f"{table} differs"


def test_every_cluster_job_ran_through_slurm_with_the_declared_resources(slurm_run: Path) -> None:
    cores = yaml.safe_load((REPO / "workflow/profiles/slurm/config.yaml").read_text())["cores"]
    declared = declared_requests(slurm_run)
    jobs = slurm_jobs(slurm_run)
    recorded = recorded_by_slurm(slurm_run)
    assert set(recorded) == set(jobs), "every submitted job is in SLURM's completion log, and only those"
    ran = Counter(member for _, members in jobs.values() for member in members)
    assert set(ran) == {key for key in declared if key[0] not in LOCAL_RULES}, "every cluster job ran in SLURM"
    assert set(ran.values()) == {1}, f"a job was submitted more than once: {ran}"
    for name, members in jobs.values():  # grouped as the profile says: per site; one SLURM job per patient
        rules = {rule for rule, _ in members}
        if rules & {"index", "select"}:
            assert name == "group_site_index_select" and rules == {"index", "select"}, (name, members)
        if "patient" in rules:
            assert name == "rule_patient" and len(members) == 1, (name, members)
    for job_id, (name, members) in jobs.items():
        state, allocation = recorded[job_id]
        assert state == "COMPLETED", (job_id, name, state)
        levels = [LEVEL.get(rule, 0) for rule, _ in members]
        low, high = expected_request([declared[m] for m in members], levels, cores)
        assert (allocation.cpus, allocation.minutes) == (low.cpus, low.minutes), (name, members, allocation, low)
        assert low.mem_mb <= allocation.mem_mb <= high.mem_mb, (name, members, allocation, low, high)
    tables = next(job_id for job_id, (name, _) in jobs.items() if name == "rule_tables")
    assert recorded[tables][1] == declared[("tables", "")], "a single-rule job gets exactly what its rule declares"


@pytest.mark.skipif(STATUS_COMMAND != "sacct", reason="the cluster has no accounting (squeue status)")
def test_sacct_agrees_with_the_completion_log(slurm_run: Path) -> None:
    recorded = recorded_by_slurm(slurm_run)
    out = subprocess.run(["sacct", "-X", "-P", "-n", "--starttime", "now-1days", "--format",
                          "JobID,State,AllocCPUS,ReqMem,Timelimit,WorkDir,Comment"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    accounted = {}
    for line in out.splitlines():
        job_id, state, cpus, mem, limit, workdir, comment = line.split("|")
        if workdir == str(slurm_run):
            accounted[job_id] = (state, Request(int(cpus), _megabytes(mem), _minutes(limit)))
            assert comment.startswith(("rule_", "group_")), comment
    assert accounted == recorded


def test_unlock_keeps_the_lock_while_a_slurm_job_of_the_directory_is_queued_or_running(tmp_path: Path) -> None:
    """After a kill -9 of Snakemake on a login node, its SLURM jobs go on: `palmares unlock` waits for them."""
    from palmares_radiomics.runlock import LockInUse, unlock

    (tmp_path / ".snakemake" / "locks").mkdir(parents=True)
    (tmp_path / ".snakemake" / "locks" / "0.output.lock").write_text("work/x\n")
    submitted = subprocess.run(["sbatch", "--parsable", f"--chdir={tmp_path}", "--output=/dev/null", "--wrap",
                                "sleep 300"], capture_output=True, text=True, check=True, timeout=60)
    job = submitted.stdout.strip().split(";")[0]
    try:
        with pytest.raises(LockInUse, match=f"SLURM job\\(s\\) {job} of this directory .* `scancel {job}`"):
            unlock(tmp_path, force=True)
        assert (tmp_path / ".snakemake" / "locks" / "0.output.lock").exists()
    finally:
        subprocess.run(["scancel", "--full", job], check=True, timeout=60)
    for _ in range(120):  # scancel is asynchronous: the job leaves squeue within MinJobAge's completing phase
        if job not in subprocess.run(["squeue", "--me", "--noheader", "--format=%i"], capture_output=True,
                                     text=True, timeout=60).stdout.split():
            break
        time.sleep(0.5)
    assert unlock(tmp_path).removed == ("0.output.lock",)
