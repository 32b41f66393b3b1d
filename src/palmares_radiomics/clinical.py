"""Clinical export: declared schema checked with pandera, per-centre mapping, eligibility and outcomes.

The export's columns, types, required values, allowed codes, date format and cross-column date rules
are declared in ``config/clinical_schema.yaml`` (:class:`ClinicalSchema`) and checked with pandera in
two passes: the text of every cell (required, allowed codes, whole numbers, dates in the centre's
format, pattern, duplicate patients), then the parsed dates of the rows that passed (no date in the
future, no progression before the CDK4/6i start, ...). A row that breaks a rule is excluded with one
issue per problem naming its row, column and what is wrong (values are never echoed: they may be
PHI); the other rows go on. Each centre's own column names, date format and codes are mapped by
configuration (:class:`ClinicalMapping`), so a new export needs no code change.

Valid rows then meet the protocol's eligibility rules (:class:`Eligibility`: at least 3 months
between CDK4/6i start and the data cut-off, CDK4/6i as first line, with an endocrine partner). They
use baseline information only: a patient is never excluded for what happened after the start.

Outcomes are derived, never typed in: OS runs from CDK4/6i start to death (event) or the last
date the patient is known alive (censored); PFS to progression or death, whichever comes first
(event), or that same date (censored). Both are administratively censored at the data cut-off.
Dates never leave this module: the output holds intervals in days and pseudonyms only.

Only rows that pass validation become patients of the DAG (:meth:`ClinicalInputs.valid_patients`);
a site code is published (issues, patient flow) only when it matches the schema's pattern.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml

from .columns import TIME_BASES
from .errors import ClinicalDataError, ConfigError
from .pseudonym import pseudonym

if TYPE_CHECKING:  # pandera (0.3 s) is imported where a schema is checked, not when the workflow reads its config
    import pandera.pandas as pa

log = logging.getLogger(__name__)

TYPES = ("string", "date", "integer", "category", "boolean")
#: Columns the code itself reads, with the type it needs; a schema without them is refused.
CORE_COLUMNS = MappingProxyType({
    "site": "string", "patient_id": "string", "birth_date": "date", "cdk46i_start_date": "date",
    "cdk46i_line": "integer", "endocrine_partner": "category", "progression_date": "date", "death_date": "date",
    "last_followup_date": "date"})
#: The declared outcome columns: the only published columns that use post-baseline information.
OUTCOME_COLUMNS = ("os_days", "os_event", "pfs_days", "pfs_event")
#: Bookkeeping columns added by :func:`read_exports` (never published).
SOURCE, ROW, DATE_FORMAT, CENTRE = "_source", "_row", "_date_format", "_centre"
ISSUE_COLUMNS = ["patient", "site", "source", "row", "column", "problem"]
FLOW_COLUMNS = ["patient", "site", "source", "row", "status", "reason"]
INVALID, INELIGIBLE, ELIGIBLE = "invalid", "ineligible", "eligible"


# --------------------------------------------------------------------------- the declared schema

@dataclass(frozen=True, slots=True)
class ColumnRule:
    """One declared column of the export (keys documented in config/clinical_schema.yaml)."""

    name: str
    type: str
    required: bool
    label: str
    description: str
    time_basis: str
    covariate: bool = False
    allowed: tuple[str, ...] = ()
    true_values: tuple[str, ...] = ()
    false_values: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    pattern: str | None = None
    not_before: tuple[str, ...] = ()
    not_after: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        where = f"clinical schema, column {self.name}"
        if self.type not in TYPES:
            raise ConfigError(f"{where}: type must be one of {', '.join(TYPES)}. Found: {self.type!r}")
        if self.time_basis not in TIME_BASES:
            renamed = " (post_baseline is now called outcome)" if self.time_basis == "post_baseline" else ""
            raise ConfigError(f"{where}: time_basis must be one of {', '.join(TIME_BASES)}. Found: {self.time_basis!r}"
                              f"{renamed}")
        if (self.type == "category") != bool(self.allowed):
            raise ConfigError(f"{where}: 'allowed' codes are needed for, and only for, type category")
        if (self.type == "boolean") != bool(self.true_values and self.false_values):
            raise ConfigError(f"{where}: true_values and false_values are needed for, and only for, type boolean")
        if set(self.true_values) & set(self.false_values):
            raise ConfigError(f"{where}: a code cannot be both true and false. Found: {self.true_values}")
        if (self.minimum is not None or self.maximum is not None) and self.type != "integer":
            raise ConfigError(f"{where}: minimum/maximum apply to integers only")
        if self.pattern is not None:
            if self.type != "string":
                raise ConfigError(f"{where}: a pattern applies to strings only")
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ConfigError(f"{where}: pattern is not a regular expression ({exc}). Found: {self.pattern!r}") \
                    from None
        if (self.not_before or self.not_after) and self.type != "date":
            raise ConfigError(f"{where}: not_before/not_after apply to dates only")
        if self.covariate and (self.time_basis != "baseline" or self.type == "date"):
            raise ConfigError(f"{where}: only baseline, non-date columns may be published as covariates "
                              f"(time_basis {self.time_basis}, type {self.type}); a post-baseline covariate would "
                              "leak the future into the modelling table")


_RULE_KEYS = {"type", "required", "label", "description", "time_basis", "covariate", "allowed", "true_values",
              "false_values", "minimum", "maximum", "pattern", "not_before", "not_after"}


@dataclass(frozen=True, slots=True)
class ClinicalSchema:
    """The declared export schema: default date format and the columns in canonical names."""

    date_format: str
    columns: Mapping[str, ColumnRule]

    def __post_init__(self) -> None:
        _check_date_format(self.date_format, "clinical schema, date_format")
        for name, kind in CORE_COLUMNS.items():
            rule = self.columns.get(name)
            if rule is None or rule.type != kind:
                raise ConfigError(f"clinical schema: column {name} must be declared with type {kind}; the pipeline "
                                  f"reads it. Found: {rule.type if rule else 'absent'}")
        if self.columns["site"].pattern is None:
            raise ConfigError("clinical schema, column site: a pattern is needed (e.g. ^[A-Z0-9]{2,8}$): the site "
                              "code is published, and a cell that does not match it is never copied to the output")
        for rule in self.columns.values():
            for other in (*rule.not_before, *rule.not_after):
                if other not in self.columns or self.columns[other].type != "date":
                    raise ConfigError(f"clinical schema, column {rule.name}: not_before/not_after must name date "
                                      f"columns. Found: {other!r}")

    @classmethod
    def load(cls, path: str | Path) -> ClinicalSchema:
        """Read and validate a schema file (unknown keys are errors)."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"clinical schema {path}: cannot be read ({exc})") from None
        if not (isinstance(data, dict) and set(data) == {"date_format", "columns"}
                and isinstance(data["columns"], dict)):
            raise ConfigError(f"clinical schema {path}: needs exactly the keys date_format and columns (a mapping)")
        rules = {}
        for name, spec in data["columns"].items():
            if not isinstance(spec, dict):
                raise ConfigError(f"clinical schema {path}, column {name}: expected a mapping of keys")
            unknown = set(spec) - _RULE_KEYS
            if unknown:
                raise ConfigError(f"clinical schema {path}, column {name}: unknown key(s) {sorted(unknown)}; "
                                  f"allowed: {sorted(_RULE_KEYS)}")
            missing = {"type", "required", "label", "description", "time_basis"} - set(spec)
            if missing:
                raise ConfigError(f"clinical schema {path}, column {name}: missing key(s) {sorted(missing)}")
            values = {k: tuple(str(v) for v in spec[k]) if k in ("allowed", "true_values", "false_values",
                                                                  "not_before", "not_after") else spec[k]
                      for k in spec}
            rules[name] = ColumnRule(name=name, **values)
        return cls(date_format=str(data["date_format"]), columns=MappingProxyType(rules))

    @property
    def covariates(self) -> tuple[str, ...]:
        """Columns published in the patient table, in schema order."""
        return tuple(name for name, rule in self.columns.items() if rule.covariate)

    @property
    def dates(self) -> tuple[str, ...]:
        return tuple(name for name, rule in self.columns.items() if rule.type == "date")


def _check_date_format(fmt: str, where: str) -> None:
    """A strftime format that writes and reads back a date (e.g. ``%d/%m/%Y``)."""
    sample = dt.date(2001, 12, 31)
    try:
        ok = dt.datetime.strptime(sample.strftime(fmt), fmt).date() == sample
    except (ValueError, TypeError):
        ok = False
    if not ok:
        raise ConfigError(f"{where}: not a strftime date format with day, month and year (e.g. %Y-%m-%d, %d/%m/%Y). "
                          f"Found: {fmt!r}")


def human_date_format(fmt: str) -> str:
    """``%d/%m/%Y`` → ``DD/MM/YYYY`` (for messages a data manager reads)."""
    return fmt.replace("%Y", "YYYY").replace("%m", "MM").replace("%d", "DD").replace("%y", "YY")


# --------------------------------------------------------------------------- per-centre mapping

@dataclass(frozen=True, slots=True)
class CentreFormat:
    """How one centre's export differs from the canonical schema.

    ``columns``: canonical name → the centre's column name; ``date_format``: the centre's date format
    (None = the schema's); ``values``: canonical column → {the centre's code: canonical code}.
    """

    columns: Mapping[str, str] = field(default_factory=dict)
    date_format: str | None = None
    values: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ClinicalMapping:
    """Per-centre export formats (config key ``clinical_mapping``); ``default`` serves every other centre."""

    centres: Mapping[str, CentreFormat] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None, schema: ClinicalSchema) -> ClinicalMapping:
        """Build from the config mapping, checking every canonical name against the schema."""
        centres = {}
        for centre, spec in (config or {}).items():
            spec = dict(spec or {})
            unknown = set(spec) - {"columns", "date_format", "values"}
            if unknown:
                raise ConfigError(f"clinical_mapping.{centre}: unknown key(s) {sorted(unknown)}; allowed: columns, "
                                  "date_format, values")
            columns = {str(k): str(v) for k, v in (spec.get("columns") or {}).items()}
            values = {str(k): {str(a): str(b) for a, b in (v or {}).items()}
                      for k, v in (spec.get("values") or {}).items()}
            for name in (*columns, *values):
                if name not in schema.columns:
                    raise ConfigError(f"clinical_mapping.{centre}: {name!r} is not a column of the clinical schema; "
                                      f"columns: {', '.join(schema.columns)}")
            if len(set(columns.values())) != len(columns):
                raise ConfigError(f"clinical_mapping.{centre}.columns: two canonical columns map to the same export "
                                  "column")
            fmt = spec.get("date_format")
            if fmt is not None:
                _check_date_format(str(fmt), f"clinical_mapping.{centre}.date_format")
            centres[str(centre)] = CentreFormat(MappingProxyType(columns), None if fmt is None else str(fmt),
                                                MappingProxyType({k: MappingProxyType(v) for k, v in values.items()}))
        return cls(MappingProxyType(centres))

    def for_centre(self, centre: str) -> CentreFormat:
        """The format of ``centre`` (site code, or "" for a merged export): its own, else ``default``."""
        return self.centres.get(centre) or self.centres.get("default") or CentreFormat()


def clinical_specs(config_value: str | Mapping[str, str]) -> list[str]:
    """Config ``clinical`` as command-line specs: a path (one export for every centre) stays ``PATH``;
    a mapping of site code → path becomes ``SITE=PATH`` per centre, in site order."""
    if isinstance(config_value, Mapping):
        return [f"{site}={path}" for site, path in sorted(config_value.items())]
    return [str(config_value)]


def parse_specs(specs: Sequence[str]) -> tuple[tuple[str, Path], ...]:
    """``PATH`` (one export for every centre) or ``SITE=PATH`` (one per centre, each site once) →
    (site code or "" for a merged export, path)."""
    sources = []
    for spec in specs:
        site, sep, path = spec.partition("=")
        sources.append((site, Path(path)) if sep else ("", Path(spec)))
    if not sources or (len(sources) > 1 and any(not site for site, _ in sources)):
        raise ConfigError("clinical export: give one PATH, or one SITE=PATH per centre. Found: " + " ".join(specs))
    sites = [site for site, _ in sources]
    twice = sorted({site for site in sites if sites.count(site) > 1})
    if twice:
        raise ConfigError(f"clinical export: one SITE=PATH per centre; given more than once: {', '.join(twice)}")
    return tuple(sources)


@dataclass(frozen=True, slots=True)
class ClinicalInputs:
    """Where the export is and how to read it: ``sources`` are (site code or "" for a merged export, path)."""

    sources: tuple[tuple[str, Path], ...]
    schema: ClinicalSchema
    mapping: ClinicalMapping

    @classmethod
    def from_specs(cls, specs: Sequence[str], schema_path: str | Path,
                   mapping: Mapping[str, Any] | None = None) -> ClinicalInputs:
        """From command-line specs (:func:`parse_specs`): ``PATH`` or one ``SITE=PATH`` per centre."""
        schema = ClinicalSchema.load(schema_path)
        return cls(parse_specs(specs), schema, ClinicalMapping.from_config(mapping, schema))

    @property
    def paths(self) -> list[str]:
        """The export files, in source order."""
        return [str(path) for _, path in self.sources]

    def read(self) -> pd.DataFrame:
        """The export(s) in canonical columns (see :func:`read_exports`)."""
        return read_exports(self.sources, self.schema, self.mapping)

    def valid_patients(self, today: dt.date | None = None) -> list[tuple[str, str]]:
        """(site, local patient id) of every row that passes validation, sorted: the patients of the DAG.

        A row that fails (say a site code ``it01`` that breaks the pattern) is no patient and its site no
        site of the DAG, so no job waits for inputs that cannot exist; the clinical stage still lists it
        in the issues and the patient flow. ``today``: the day no date may follow (default: today).
        """
        typed, _ = validate_export(self.read(), self.schema, today or dt.date.today())
        return sorted(set(zip(typed["site"], typed["patient_id"])))


def read_exports(sources: Sequence[tuple[str, Path]], schema: ClinicalSchema, mapping: ClinicalMapping) -> pd.DataFrame:
    """Read each export as text, rename its columns to the canonical ones and recode its values.

    Every declared column is present afterwards (empty string = missing), plus the bookkeeping columns
    ``_source`` (:func:`source_label`: the file name, prefixed by the site of a per-centre export, so two
    centres' ``export.csv`` stay apart), ``_row`` (spreadsheet row: the header is row 1), ``_date_format`` (the
    centre's) and ``_centre`` (the site of a per-centre export, "" for a merged one). A file without
    a required column, or whose mapping names a column it lacks, is refused as a whole.
    """
    frames = []
    for centre, path in sources:
        label = source_label(centre, path)
        fmt = mapping.for_centre(centre)
        raw = _read_export_csv(path, label)
        raw.columns = [str(c).strip() for c in raw.columns]
        absent = [f"{export!r} (mapped to {canonical})" for canonical, export in fmt.columns.items()
                  if export not in raw.columns]
        if absent:
            raise ClinicalDataError(f"{label}: the clinical_mapping names column(s) {', '.join(absent)} "
                                    f"that the export lacks; columns found: {list(raw.columns)}")
        table = raw.rename(columns={export: canonical for canonical, export in fmt.columns.items()})
        missing = [name for name, rule in schema.columns.items() if rule.required and name not in table.columns
                   and not (name == "site" and centre)]
        if missing:
            raise ClinicalDataError(f"{label}: required column(s) {missing} are missing; columns found: "
                                    f"{list(raw.columns)} (map a centre's own names in config clinical_mapping)")
        out = pd.DataFrame(index=pd.RangeIndex(len(table)))
        for name in schema.columns:
            out[name] = table[name].astype(str).str.strip() if name in table.columns else ""
        if centre:
            out.loc[out["site"] == "", "site"] = centre
        for name, codes in fmt.values.items():
            out[name] = out[name].map(lambda v, c=codes: c.get(v, v))
        out[SOURCE] = label
        out[ROW] = range(2, len(out) + 2)
        out[DATE_FORMAT] = fmt.date_format or schema.date_format
        out[CENTRE] = centre
        frames.append(out)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*schema.columns, SOURCE, ROW,
                                                                                      DATE_FORMAT, CENTRE])


#: Encodings an export is tried in, in order: UTF-8 (with or without a BOM), then what Italian spreadsheets
#: save as "CSV" on Windows (cp1252: 'Forlì', 'Nicolò', curly apostrophes), then Latin-1, which decodes any bytes.
EXPORT_ENCODINGS = (("utf-8-sig", "UTF-8"), ("cp1252", "cp1252"), ("latin-1", "Latin-1"))


def decode_export(data: bytes) -> tuple[str, str]:
    """The text of an export's bytes and the name of the encoding used (:data:`EXPORT_ENCODINGS`, first that fits).

    UTF-8 is tried first: text that is not valid UTF-8 almost never decodes as UTF-8 by chance, while any
    bytes decode as cp1252/Latin-1, so the order decides. A BOM is dropped.
    """
    for codec, name in EXPORT_ENCODINGS:
        try:
            return data.decode(codec), name
        except UnicodeDecodeError:
            continue
    raise AssertionError("unreachable: Latin-1 decodes any bytes")


def _read_export_csv(path: Path, label: str) -> pd.DataFrame:
    """One export as a table of text cells, in the encoding it was saved in (logged).

    An export with no header (0 bytes, blank lines) is a :class:`ClinicalDataError`; a header without data rows
    is read as zero rows, with a warning; a file the CSV parser cannot split into rows is a ClinicalDataError.
    """
    text, encoding = decode_export(Path(path).read_bytes())
    note = "" if encoding == "UTF-8" else " (not valid UTF-8)"
    log.info("clinical export %s read as %s%s", label, encoding, note)
    if not text.strip():
        raise ClinicalDataError(f"the clinical export {label} is empty: it has no header row and no data rows; "
                                "re-export it from the eCRF with its header row (the column names of "
                                "config/clinical_schema.yaml or of the centre's clinical_mapping)")
    try:
        raw = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except pd.errors.ParserError as exc:  # rows with more cells than the header, unclosed quotes
        raise ClinicalDataError(f"the clinical export {label} is not a readable CSV table "
                                f"({str(exc).strip().splitlines()[-1]}); re-export it from the eCRF") from None
    if raw.empty:
        log.warning("the clinical export %s has a header but no data rows: it gives no patient", label)
    return raw


def source_label(centre: str, path: str | Path) -> str:
    """How issues and the patient flow name an export: ``IT01:export.csv`` for a per-centre export (unique,
    as each centre has one), the file name for the merged one. Never the folder, which may name a person."""
    name = Path(path).name
    return f"{centre}:{name}" if centre else name


def parse_dates(values: pd.Series, formats: pd.Series) -> pd.Series:
    """Dates of ``values`` read with each row's own format; NaT where empty or not a date in that format."""
    out = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]")
    present = values.notna() & (values != "")
    for fmt in formats[present].unique():
        rows = present & (formats == fmt)
        out[rows] = pd.to_datetime(values[rows], format=fmt, errors="coerce")
    return out


def therapy_starts(table: pd.DataFrame) -> dict[tuple[str, str], dt.date]:
    """CDK4/6i start date per (site, patient_id) for rows whose start date parses (PHI side only)."""
    starts = parse_dates(table["cdk46i_start_date"], table[DATE_FORMAT])
    return {(site, pid): start.date() for site, pid, start in zip(table["site"], table["patient_id"], starts)
            if not pd.isna(start) and site and pid}


# --------------------------------------------------------------------------- validation (pandera)

@dataclass(frozen=True, slots=True)
class ClinicalIssue:
    """Why one row of the export was excluded: file, row (as in a spreadsheet: header is row 1), column, problem."""

    source: str
    row: int
    column: str
    problem: str


#: Placeholder problem of the date-format check; the issue names the row's own format instead.
_DATE_PROBLEM = "not a date in the centre's date format"
#: Problem text of pandera's built-in checks.
_BUILTIN_PROBLEMS = {"not_nullable": "required value is empty"}


def _text_schema(schema: ClinicalSchema) -> tuple[pa.DataFrameSchema, dict[str, tuple[str, str]]]:
    """Pass 1, on the cells as text: required, codes, whole numbers, pattern, dates in the row's format, duplicates.

    Returns the pandera schema and, per check error key, the (column, problem) it stands for.
    """
    import pandera.pandas as pa

    problems: dict[str, tuple[str, str]] = {}
    columns, wide = {}, []

    def check(column: str, problem: str, fn: Callable[..., Any]) -> pa.Check:
        """A vectorised pandera check whose error text is the key of its (column, problem)."""
        key = f"{column}: {problem}"
        problems[key] = (column, problem)
        return pa.Check(fn, error=key)

    for name, rule in schema.columns.items():
        checks = []
        if rule.type == "category":
            allowed = set(rule.allowed)
            checks.append(check(name, f"unknown {rule.label}; allowed: {', '.join(sorted(allowed))}",
                                lambda s, a=allowed: s.isin(a)))
        elif rule.type == "boolean":
            codes = set(rule.true_values) | set(rule.false_values)
            checks.append(check(name, f"unknown {rule.label} code; allowed: {', '.join(sorted(codes))}",
                                lambda s, a=codes: s.isin(a)))
        elif rule.type == "integer":
            low, high = rule.minimum, rule.maximum
            span = f" from {low} to {high}" if low is not None and high is not None else (
                f" >= {low}" if low is not None else (f" <= {high}" if high is not None else ""))
            checks.append(check(name, f"not a whole number{span}", lambda s, lo=low, hi=high: _in_range(s, lo, hi)))
        elif rule.type == "string" and rule.pattern:
            checks.append(check(name, f"not a valid {rule.label} (pattern {rule.pattern})",
                                lambda s, p=rule.pattern: s.str.fullmatch(p).fillna(False).astype(bool)))
        elif rule.type == "date":
            wide.append(check(name, _DATE_PROBLEM,
                              lambda df, c=name: df[c].isna() | parse_dates(df[c], df[DATE_FORMAT]).notna()))
        columns[name] = pa.Column(str, checks=checks, nullable=not rule.required)
    wide.append(check("site", "not the centre of this per-centre export",
                      lambda df: (df[CENTRE] == "") | (df["site"] == df[CENTRE])))
    columns.update({SOURCE: pa.Column(str), ROW: pa.Column(int), DATE_FORMAT: pa.Column(str), CENTRE: pa.Column(str)})
    return pa.DataFrameSchema(columns, checks=wide, unique=["site", "patient_id"], report_duplicates="all",
                              name="clinical export (text)"), problems


def _in_range(values: pd.Series, low: int | None, high: int | None) -> pd.Series:
    """True where a text value is a whole number within [low, high]."""
    numbers = pd.to_numeric(values.where(values.str.fullmatch(r"[+-]?\d+").fillna(False).astype(bool)),
                            errors="coerce")
    ok = numbers.notna()
    if low is not None:
        ok &= numbers >= low
    if high is not None:
        ok &= numbers <= high
    return ok


def _typed(table: pd.DataFrame, schema: ClinicalSchema) -> pd.DataFrame:
    """Text rows that passed pass 1 → typed columns: dates (datetime64), Int64, boolean, text."""
    out = table.copy()
    for name, rule in schema.columns.items():
        if rule.type == "date":
            out[name] = parse_dates(table[name], table[DATE_FORMAT])
        elif rule.type == "integer":
            out[name] = pd.to_numeric(table[name], errors="raise").astype("Int64")
        elif rule.type == "boolean":
            codes = {**{v: True for v in rule.true_values}, **{v: False for v in rule.false_values}}
            out[name] = table[name].map(codes).astype("boolean")
    return out


def _date_schema(schema: ClinicalSchema, today: dt.date) -> tuple[pa.DataFrameSchema, dict[str, tuple[str, str]]]:
    """Pass 2, on parsed dates: nothing in the future, and the declared not_before / not_after orders."""
    import pandera.pandas as pa

    problems: dict[str, tuple[str, str]] = {}
    checks = []
    limit = pd.Timestamp(today)

    def add(column: str, problem: str, fn: Callable[[pd.DataFrame], pd.Series]) -> None:
        key = f"{column}: {problem}"
        problems[key] = (column, problem)
        checks.append(pa.Check(fn, error=key))

    for name, rule in schema.columns.items():
        if rule.type != "date":
            continue
        add(name, "date in the future", lambda df, c=name: ~(df[c] > limit))
        for other in rule.not_before:
            add(name, f"before the {schema.columns[other].label} ({other})",
                lambda df, c=name, o=other: ~(df[c] < df[o]))
        for other in rule.not_after:
            add(name, f"after the {schema.columns[other].label} ({other})",
                lambda df, c=name, o=other: ~(df[c] > df[o]))
    columns = {name: pa.Column("datetime64[ns]", nullable=not rule.required)
               for name, rule in schema.columns.items() if rule.type == "date"}
    return pa.DataFrameSchema(columns, checks=checks, name="clinical export (dates)"), problems


def _issues(schema: pa.DataFrameSchema, problems: Mapping[str, tuple[str, str]], table: pd.DataFrame
            ) -> dict[int, list[tuple[str, str]]]:
    """Run a pandera schema lazily; every failure as (column, problem), per row index, in a stable order."""
    import pandera.pandas as pa

    try:
        schema.validate(table, lazy=True)
        return {}
    except pa.errors.SchemaErrors as errors:
        cases = errors.failure_cases
    found: dict[int, list[tuple[str, str]]] = {}
    duplicates = cases[cases["check"] == "multiple_fields_uniqueness"]
    for index in sorted(set(duplicates["index"].dropna().astype(int))):
        key = (table.at[index, "site"], table.at[index, "patient_id"])
        rows = table.loc[(table["site"] == key[0]) & (table["patient_id"] == key[1]), ROW]
        found.setdefault(index, []).append(("patient_id", "duplicate patient: the same site and patient_id are on "
                                            f"rows {', '.join(map(str, rows))}"))
    for case in cases[cases["check"] != "multiple_fields_uniqueness"].itertuples():
        if pd.isna(case.index):
            raise ClinicalDataError(f"clinical export: {case.check} ({case.column})")  # a whole-column failure
        if case.check in problems:
            issue = problems[case.check]
        elif case.check in _BUILTIN_PROBLEMS:
            issue = (str(case.column), _BUILTIN_PROBLEMS[case.check])
        else:
            issue = (str(case.column), f"failed check {case.check}")
        listed = found.setdefault(int(case.index), [])
        if issue not in listed:
            listed.append(issue)
    return found


def validate_export(table: pd.DataFrame, schema: ClinicalSchema, today: dt.date
                    ) -> tuple[pd.DataFrame, dict[int, list[ClinicalIssue]]]:
    """The typed valid rows of a canonical export (from :func:`read_exports`) and, per index of ``table``
    of an excluded row, one issue per problem (in schema column order).

    ``today`` is the day a date may not follow ("date in the future"). Two pandera passes: text,
    then dates (only on the rows whose text passed).
    """
    names = list(schema.columns)
    text = table.copy()
    text[names] = table[names].where(table[names] != "", None)
    text_schema, text_problems = _text_schema(schema)
    found = _issues(text_schema, text_problems, text)
    typed = _typed(text.drop(index=list(found)), schema)
    date_schema, date_problems = _date_schema(schema, today)
    found.update(_issues(date_schema, date_problems, typed))
    order = {name: position for position, name in enumerate(schema.columns)}
    issues: dict[int, list[ClinicalIssue]] = {}
    for i in sorted(found):
        for column, problem in sorted(found[i], key=lambda issue: order.get(issue[0], len(order))):
            if problem == _DATE_PROBLEM:
                fmt = table.at[i, DATE_FORMAT]
                problem = f"not a date in the format {human_date_format(fmt)} ({fmt})"
            issues.setdefault(i, []).append(ClinicalIssue(table.at[i, SOURCE], int(table.at[i, ROW]), column, problem))
    return typed.drop(index=list(found), errors="ignore"), issues


# --------------------------------------------------------------------------- eligibility

@dataclass(frozen=True, slots=True)
class Eligibility:
    """The protocol's inclusion rules (config key ``eligibility``), on baseline information only."""

    min_followup_months: int = 3
    first_line_only: bool = True
    endocrine_partner_required: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.min_followup_months <= 60:
            raise ConfigError(f"eligibility.min_followup_months must be between 0 and 60. Found: "
                              f"{self.min_followup_months}")

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> Eligibility:
        config = dict(config or {})
        unknown = set(config) - {"min_followup_months", "first_line_only", "endocrine_partner_required"}
        if unknown:
            raise ConfigError(f"eligibility: unknown key(s) {sorted(unknown)}")
        return cls(**config)


def ineligibility(typed: pd.DataFrame, rules: Eligibility, cutoff: dt.date) -> dict[int, list[tuple[str, str]]]:
    """Per valid row index, every (criterion, reason) that excludes it; eligible rows are absent."""
    found: dict[int, list[tuple[str, str]]] = {}
    latest_start = pd.Timestamp(cutoff) - pd.DateOffset(months=rules.min_followup_months)
    for index, row in typed.iterrows():
        reasons = []
        if row["cdk46i_start_date"] > latest_start:
            reasons.append(("follow_up", f"CDK4/6i started less than {rules.min_followup_months} months before the "
                            "data cut-off"))
        if rules.first_line_only and row["cdk46i_line"] != 1:
            reasons.append(("first_line", f"CDK4/6i given as line {row['cdk46i_line']} of therapy, not first line"))
        if rules.endocrine_partner_required and pd.isna(row["endocrine_partner"]):
            reasons.append(("endocrine_therapy", "no endocrine partner recorded: CDK4/6i not given with endocrine "
                            "therapy"))
        if reasons:
            found[index] = reasons
    return found


# --------------------------------------------------------------------------- outcomes

@dataclass(frozen=True, slots=True)
class Outcomes:
    """Survival outcomes of one patient in whole days from CDK4/6i start."""

    os_days: int
    os_event: bool
    pfs_days: int
    pfs_event: bool


def derive_outcomes(start: dt.date, progression: dt.date | None, death: dt.date | None, last_followup: dt.date,
                    cutoff: dt.date) -> Outcomes:
    """OS and PFS from the dates of one patient, administratively censored at ``cutoff``.

    OS: death (event) or censored at min(last known, cut-off). PFS: the first of progression and
    death (event; death without progression counts) or censored at min(last known, cut-off). Last
    known = max(last follow-up, progression, death): a later recorded date proves the patient was
    followed (alive, and event-free up to that event) until then. So an event after the cut-off is
    not an event, and the patient is censored at the cut-off, even when the last follow-up date
    lies before it.
    """
    last_known = max(d for d in (last_followup, progression, death) if d is not None)
    censor = min(last_known, cutoff)
    if death is not None and death <= cutoff:
        os_days, os_event = (death - start).days, True
    else:
        os_days, os_event = (censor - start).days, False
    first_event = min((d for d in (progression, death) if d is not None), default=None)
    if first_event is not None and first_event <= cutoff:
        pfs_days, pfs_event = (first_event - start).days, True
    else:
        pfs_days, pfs_event = (censor - start).days, False
    return Outcomes(os_days, os_event, pfs_days, pfs_event)


def _date(value: Any) -> dt.date | None:
    return None if pd.isna(value) else pd.Timestamp(value).date()


# --------------------------------------------------------------------------- the clinical stage

#: Published columns the clinical stage adds (description, unit, time basis); covariates come from the schema.
DERIVED_COLUMNS = MappingProxyType({
    "patient": ("patient pseudonym PAL2-XXXXXXXXXX (keyed hash of site + local patient id)", "", "identifier"),
    "site": ("centre code", "", "identifier"),
    "age_at_start_years": ("age at CDK4/6i start: (start date - birth date) / 365.25, one decimal", "years",
                           "baseline"),
    "os_days": ("overall survival time from CDK4/6i start to death, or censoring at the last date known alive "
                "(last follow-up, or a later recorded event) or the data cut-off, whichever first (outcome)", "days",
                "outcome"),
    "os_event": ("overall survival event: True = death on or before the data cut-off (outcome)", "", "outcome"),
    "pfs_days": ("progression-free survival time from CDK4/6i start to progression or death, whichever first, or "
                 "censoring at the last date known alive (last follow-up, or a later recorded event) or the data "
                 "cut-off, whichever first (outcome)", "days", "outcome"),
    "pfs_event": ("progression-free survival event: True = progression or death (without progression too) on or "
                  "before the data cut-off (outcome)", "", "outcome"),
})


@dataclass(frozen=True, slots=True)
class ClinicalResult:
    """The clinical stage's products (no date, no local identifier).

    ``table``: one row per eligible patient (pseudonym, site, age, covariates, outcomes);
    ``issues``: one row per problem of an excluded row (ISSUE_COLUMNS); ``flow``: one row per export
    row with its status (invalid, ineligible, eligible) and the reason (FLOW_COLUMNS);
    ``columns``: column, description, unit, time_basis of every column of ``table``.
    """

    table: pd.DataFrame
    issues: pd.DataFrame
    flow: pd.DataFrame
    columns: pd.DataFrame


def output_columns(schema: ClinicalSchema) -> pd.DataFrame:
    """Description, unit and time basis of every column the clinical stage publishes."""
    rows = [(c, *DERIVED_COLUMNS[c]) for c in ("patient", "site", "age_at_start_years")]
    rows += [(name, schema.columns[name].description, "", schema.columns[name].time_basis)
             for name in schema.covariates]
    rows += [(c, *DERIVED_COLUMNS[c]) for c in OUTCOME_COLUMNS]
    return pd.DataFrame(rows, columns=["column", "description", "unit", "time_basis"])


def publishable_site(site: str, schema: ClinicalSchema) -> str:
    """``site`` when it is a centre code by the schema's pattern, else "" (the raw cell could be anything)."""
    return site if re.fullmatch(schema.columns["site"].pattern, site) else ""


def prepare_clinical(table: pd.DataFrame, key: bytes, cutoff: dt.date, schema: ClinicalSchema,
                     rules: Eligibility | None = None, today: dt.date | None = None) -> ClinicalResult:
    """Validate, apply eligibility, pseudonymise and derive outcomes (``table`` from :func:`read_exports`)."""
    rules = rules or Eligibility()
    today = today or dt.date.today()
    typed, issues = validate_export(table, schema, today)
    excluded = ineligibility(typed, rules, cutoff)

    def who(index: int) -> tuple[str, str]:
        """Pseudonym and publishable site of a row (a site that breaks the pattern is raw text: never copied)."""
        site, pid = table.at[index, "site"], table.at[index, "patient_id"]
        return (pseudonym(key, site, pid) if site and pid else ""), publishable_site(site, schema)

    issue_rows = [{"patient": who(i)[0], "site": who(i)[1], "source": issue.source, "row": issue.row,
                   "column": issue.column, "problem": issue.problem}
                  for i, listed in issues.items() for issue in listed]
    flow, rows = [], []
    for index in table.index:
        patient, site = who(index)
        base = {"patient": patient, "site": site, "source": table.at[index, SOURCE], "row": int(table.at[index, ROW])}
        if index in issues:
            flow.append({**base, "status": INVALID, "reason": "; ".join(f"{i.column}: {i.problem}"
                                                                          for i in issues[index])})
            continue
        if index in excluded:
            flow.append({**base, "status": INELIGIBLE, "reason": "; ".join(r for _, r in excluded[index])})
            continue
        flow.append({**base, "status": ELIGIBLE, "reason": ""})
        row = typed.loc[index]
        start = _date(row["cdk46i_start_date"])
        outcomes = derive_outcomes(start, _date(row["progression_date"]), _date(row["death_date"]),
                                   _date(row["last_followup_date"]), cutoff)
        age = (start - _date(row["birth_date"])).days / 365.25
        rows.append({"patient": patient, "site": site, "age_at_start_years": round(age, 1),
                     **{c: row[c] for c in schema.covariates},
                     "os_days": outcomes.os_days, "os_event": outcomes.os_event,
                     "pfs_days": outcomes.pfs_days, "pfs_event": outcomes.pfs_event})
    columns = output_columns(schema)
    out = pd.DataFrame(rows, columns=list(columns["column"]))
    dtypes = {"age_at_start_years": "float64", "os_days": "int64", "pfs_days": "int64", "os_event": "bool",
              "pfs_event": "bool", **{c: typed[c].dtype for c in schema.covariates}}
    out = out.astype(dtypes).sort_values("patient").reset_index(drop=True)
    return ClinicalResult(out, pd.DataFrame(issue_rows, columns=ISSUE_COLUMNS),
                          pd.DataFrame(flow, columns=FLOW_COLUMNS), columns)
