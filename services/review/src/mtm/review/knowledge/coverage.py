"""Label coverage of the most prescribed drugs: per drug and label section, what the knowledge base encodes or not."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mtm.review.domain.dur import KnowledgeBase, KnowledgeBaseError
from mtm.review.domain.dur.checks import cited
from mtm.review.domain.dur.tables import LABEL_SECTIONS, TABLES
from mtm.review.knowledge.loader import BUNDLED_DIRECTORY, load_from_directory

TOP_DRUGS = "top300.csv"
LABELS = "labels.csv"
GAPS = "label_gaps.csv"
NO_DRUG_LABEL = "no_drug_label.csv"

KINDS = ("contraindication", "boxed-warning", "interaction", "renal", "hepatic", "max-dose", "population", "warning")
"""What a label-cited row encodes; the first six are the sections every staged label is accounted for in."""
CORE_KINDS = KINDS[:6]
GAP_STATUSES = (
    "encoded-by",  # encoded by another rule (duplication, CPIC, a curated row): detail names it
    "none-in-label",  # the label has no statement of this kind
    "not-encoded",  # the label has one and mtm does not encode it yet
    "not-checkable",  # the label's statement needs data the drug check does not have (procedure, age in months)
    "other-product",  # the staged label is another product (injection, other formulation)
    "indication-specific",  # depends on the indication, which the check does not know
)
# openFDA section that holds each kind when a label has it at all (a label without it has none of that kind).
KIND_SECTION = {"boxed-warning": "boxed_warning"}
# A top-300 entry named for a local route (`ciprofloxacin ophthalmic`) is another product than a systemic label of
# the same ingredient: that label's contraindications and limits are not the eye drop's.
LOCAL_ROUTES = ("ophthalmic", "otic", "nasal", "topical")

Row = Mapping[str, str]


@dataclass(frozen=True, slots=True)
class KindCoverage:
    """One kind for one drug: `encoded` (label-cited rules), `accounted` (a gap row says why not or where), `none`
    (the label has no such section), `no-label` (no label text staged), `no-drug-label` (the product has no FDA drug
    label at all: a dietary supplement) or `not-reviewed`."""

    status: str
    rules: tuple[str, ...] = ()
    gaps: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DrugCoverage:
    rank: int
    name: str
    ingredients: tuple[str, ...]
    labels: tuple[str, ...]
    kinds: Mapping[str, KindCoverage]
    other_rules: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CoverageReport:
    version: str
    drugs: tuple[DrugCoverage, ...]
    problems: tuple[str, ...]

    def summary(self) -> dict[str, dict[str, int]]:
        """Per kind, how many of the drugs are in each status."""
        counts: dict[str, dict[str, int]] = {kind: defaultdict(int) for kind in CORE_KINDS}  # type: ignore[misc]
        for drug in self.drugs:
            for kind in CORE_KINDS:
                counts[kind][drug.kinds[kind].status] += 1
        return {kind: dict(values) for kind, values in counts.items()}


def _read(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _cited_tables() -> tuple[str, ...]:
    return tuple(spec.table for spec in TABLES if spec.cited)


def _problems(
    labels: Mapping[str, Row],
    cited: Mapping[str, list[dict[str, str]]],
    gaps: Sequence[Row],
    unlabeled: Sequence[Row] = (),
) -> list[str]:
    """Rows that would ship without a full citation: CI fails on any."""
    problems = []
    for table, rows in cited.items():
        for row in rows:
            where = f"{table}: {row.get('rule_id') or '?'}"
            for column in ("label_set_id", "section", "quote", "kind"):
                if not (row.get(column) or "").strip():
                    problems.append(f"{where}: no {column}")
            if (row.get("label_set_id") or "").strip() not in labels:
                problems.append(f"{where}: label set id {row.get('label_set_id')!r} is not in {LABELS}")
            if (row.get("section") or "").strip() and row["section"].strip() not in LABEL_SECTIONS:
                problems.append(f"{where}: section {row['section']!r} is not a label section")
            if (row.get("kind") or "").strip() and row["kind"].strip() not in KINDS:
                problems.append(f"{where}: kind {row['kind']!r} is not one of {KINDS}")
    for number, row in enumerate(gaps, start=2):
        where = f"{GAPS} line {number}"
        if row.get("label_set_id", "").strip() not in labels:
            problems.append(f"{where}: label set id {row.get('label_set_id')!r} is not in {LABELS}")
        if row.get("status", "").strip() not in GAP_STATUSES:
            problems.append(f"{where}: status {row.get('status')!r} is not one of {GAP_STATUSES}")
        if row.get("kind", "").strip() not in (*KINDS, "pharmacogenomic"):
            problems.append(f"{where}: kind {row.get('kind')!r}")
        if not row.get("detail", "").strip():
            problems.append(f"{where}: no detail")
    for number, row in enumerate(unlabeled, start=2):
        if not all((row.get(column) or "").strip() for column in ("name", "category", "detail", "source")):
            problems.append(f"{NO_DRUG_LABEL} line {number}: name, category, detail and source are all required")
    for set_id, label in labels.items():
        for column in ("title", "version", "effective", "provenance"):
            if not (label.get(column) or "").strip():
                problems.append(f"{LABELS}: {set_id}: no {column}")
    return problems


def _kind(
    kind: str,
    label_ids: Sequence[str],
    labels: Mapping[str, Row],
    encoded: Mapping[tuple[str, str], list[str]],
    gaps: Mapping[tuple[str, str], list[str]],
) -> KindCoverage:
    if not label_ids:
        return KindCoverage("no-label")
    rules = tuple(rule for set_id in label_ids for rule in encoded.get((set_id, kind), ()))
    notes = tuple(note for set_id in label_ids for note in gaps.get((set_id, kind), ()))
    if rules:
        return KindCoverage("encoded", rules, notes)
    if notes:
        return KindCoverage("accounted", (), notes)
    section = KIND_SECTION.get(kind)
    if section and all(section not in labels[set_id]["sections"].split(";") for set_id in label_ids):
        return KindCoverage("none", (), (f"the label has no {LABEL_SECTIONS[section]} section",))
    return KindCoverage("not-reviewed")


def coverage(directory: Path | str = BUNDLED_DIRECTORY) -> CoverageReport:
    """The coverage of the drugs in `top300.csv` by the label-cited tables of the knowledge base in `directory`."""
    directory = Path(directory)
    problems: list[str] = []
    try:
        kb = load_from_directory(directory)
        version = kb.version
    except KnowledgeBaseError as error:
        kb, version = None, "unloadable"  # type: ignore[assignment]
        problems.append(f"the knowledge base does not load: {error}")
    labels = {row["set_id"].strip(): row for row in _read(directory / LABELS)}
    cited = {table: _read(directory / f"{table}.csv") for table in _cited_tables()}
    gap_rows = _read(directory / GAPS)
    unlabeled_rows = _read(directory / NO_DRUG_LABEL)
    problems += _problems(labels, cited, gap_rows, unlabeled_rows)
    unlabeled = {row["name"].strip(): row for row in unlabeled_rows}
    top = _read(directory / TOP_DRUGS)
    problems += [
        f"{NO_DRUG_LABEL}: {name!r} is not in {TOP_DRUGS}" for name in unlabeled.keys() - {r["name"] for r in top}
    ]

    encoded: dict[tuple[str, str], list[str]] = defaultdict(list)
    for rows in cited.values():
        for row in rows:
            set_id, kind = row.get("label_set_id", "").strip(), row.get("kind", "").strip()
            encoded[(set_id, kind)].append(row["rule_id"])
            # A drug-drug or allergy row quoting the Contraindications section encodes a contraindication too.
            if row.get("section", "").strip() == "contraindications" and kind != "contraindication":
                encoded[(set_id, "contraindication")].append(row["rule_id"])
    gaps: dict[tuple[str, str], list[str]] = defaultdict(list)
    for row in gap_rows:
        gaps[(row["label_set_id"].strip(), row["kind"].strip())].append(f"{row['status']}: {row['detail']}")
    by_ingredients: dict[str, list[str]] = defaultdict(list)
    for set_id, row in labels.items():
        by_ingredients[row["ingredients"].strip()].append(set_id)

    drugs = []
    for row in top:
        ingredients = tuple(part.strip() for part in row["ingredients"].split(";") if part.strip())
        label_ids = [
            set_id
            for set_id in by_ingredients.get(row["ingredients"].strip(), [])
            if _same_product_route(row["name"], labels[set_id].get("route", ""))
        ]
        kinds = {kind: _kind(kind, label_ids, labels, encoded, gaps) for kind in KINDS}
        if not label_ids and row["name"] in unlabeled:
            # A dietary supplement is not missing label text: there is no FDA drug label to stage.
            reason = unlabeled[row["name"]]
            note = f"no FDA drug label ({reason['category']}): {reason['detail']} [{reason['source']}]"
            kinds = {kind: KindCoverage("no-drug-label", (), (note,)) for kind in KINDS}
        drugs.append(
            DrugCoverage(
                rank=int(row["rank"]),
                name=row["name"],
                ingredients=ingredients,
                labels=tuple(f"{labels[i]['title']} (set id {i}, version {labels[i]['version']})" for i in label_ids),
                kinds=kinds,
                other_rules=_other_rules(kb, ingredients) if kb is not None else {},
            )
        )
    return CoverageReport(version, tuple(drugs), tuple(problems))


def _same_product_route(name: str, label_route: str) -> bool:
    """Whether a label can speak for the top-300 entry: one named for a local route needs a label for that route,
    and one named without a route (taken by mouth, injected, inhaled) is not spoken for by the label of an eye
    drop, a nasal spray or a skin product (a diclofenac gel's Drug Facts say nothing of diclofenac tablets)."""
    local = name.strip().lower().rsplit(" ", 1)[-1]
    route = label_route.lower()
    if local in LOCAL_ROUTES:
        return local in route
    return not any(word in route for word in LOCAL_ROUTES)


def _other_rules(kb: KnowledgeBase, ingredients: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Rules that are not label-cited but apply to the drug (curated rows naming a label without its set id,
    guidelines, third-party lists), by kind, so a drug without label text still shows what is checked."""
    names = [kb.canonical(name) for name in ingredients]
    found: dict[str, set[str]] = defaultdict(set)
    for name in names:
        for kind, index in (
            ("renal", kb.renal),
            ("contraindication", kb.conditions),
            ("max-dose", kb.dose_limits),
            ("interaction", kb.pair_dose_limits),
        ):
            for rule in index.get(name, ()):
                if not cited(rule):
                    found[kind].add(rule.rule_id)
    interacting = set(names)
    count = sum(1 for pair, rule in kb.interactions.items() if pair & interacting and not cited(rule))
    if count:
        found["interaction"].add(f"{count} pair rules (curated, ONC, VA NDF-RT)")
    return {kind: tuple(sorted(values)) for kind, values in sorted(found.items())}


_LETTER = {"encoded": "E", "accounted": "A", "none": "-", "no-label": ".", "no-drug-label": "x", "not-reviewed": "?"}


def render(report: CoverageReport, detail: bool = False) -> str:
    """A table: one line per drug, one letter per core kind (E encoded, A accounted for by a listed gap, - none in
    the label, . no label text, x no FDA drug label, ? not reviewed), then per-kind totals and any problem."""
    lines = [
        f"Knowledge base {report.version}: label coverage of {len(report.drugs)} most prescribed drugs",
        "E encoded with its citation, A listed as not yet encoded (or encoded by another rule) with the reason, "
        "- the label has no such section, . no label text available, x no FDA drug label (dietary supplement), "
        "? not reviewed",
        "",
        f"{'rank':>4}  {'drug':<42} " + " ".join(f"{kind[:8]:>8}" for kind in CORE_KINDS) + "  label",
    ]
    for drug in report.drugs:
        letters = " ".join(f"{_LETTER[drug.kinds[kind].status]:>8}" for kind in CORE_KINDS)
        label = drug.labels[0] if drug.labels else _no_label(drug)
        lines.append(f"{drug.rank:>4}  {drug.name[:42]:<42} {letters}  {label}")
        if detail:
            for kind in KINDS:
                entry = drug.kinds[kind]
                if entry.rules or entry.gaps:
                    lines.append(f"        {kind}: {', '.join(entry.rules) or '-'}")
                    lines.extend(f"          {gap}" for gap in entry.gaps)
            for kind, rules in drug.other_rules.items():
                lines.append(f"        other sourced {kind} rules: {', '.join(rules)}")
    lines.append("")
    for kind, counts in report.summary().items():
        parts = ", ".join(f"{status} {count}" for status, count in sorted(counts.items()))
        lines.append(f"{kind:<17} {parts}")
    lines.extend(f"PROBLEM: {problem}" for problem in report.problems)
    return "\n".join(lines)


def _no_label(drug: DrugCoverage) -> str:
    entry = drug.kinds[CORE_KINDS[0]]
    return entry.gaps[0].split(":", 1)[0] if entry.status == "no-drug-label" else "no label text staged"


def as_json(report: CoverageReport) -> str:
    return json.dumps(asdict(report), indent=1, ensure_ascii=False)
