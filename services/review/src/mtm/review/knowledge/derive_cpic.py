"""Derive `data/pgx_cpic.csv` (one row per actionable gene-phenotype-drug) from CPIC's CC0 recommendation export.

Run: python -m mtm.review.knowledge.derive_cpic <cpic_recommendations_flat.csv> <cpic_gene_drug_pairs.csv> <out.csv>

Only CPIC level A/B pairs are kept. A recommendation is actionable when it differs from the recommendation for
the normal phenotype of the same drug and population; its severity follows CPIC's own wording and strength:
a Strong recommendation to avoid the drug or use an alternative is `high`, any other call to avoid, change
drug or change dose is `moderate`, and Optional recommendations and remaining differences (e.g. "if no response,
consider ...") are `low`. Standard-dosing and "no reason to avoid" statements are not actionable.
Rows that combine two non-reference genes are left out: each rule tests one gene (or one HLA allele).
"""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

REFERENCE_VALUES = frozenset({"normal metabolizer", "normal function", "normal", "no result", "n/a"})
UNINFORMATIVE = frozenset({"indeterminate", "no result", "n/a", "variable"})
NOT_ACTIONABLE = re.compile(
    r"^(based on \w+ status, )?(no recommendation|no reason to avoid|initiate therapy with (the )?"
    r"(recommended|standard)|use .{0,40}(per standard dosing|according to the product label)"
    r"|prescribe desired starting dose)",
    re.IGNORECASE,
)
LEVELS = frozenset({"A", "A/B", "B"})
DRUG_NAMES = {"sulfamethoxazole / trimethoprim": "sulfamethoxazole", "vitamin k": "phytonadione"}
SEVERITY_RANK = {"high": 0, "moderate": 1, "low": 2}
AVOID = re.compile(r"\b(avoid|contraindicated|not recommended|do not use|alternative)\b", re.IGNORECASE)
DOSE_CHANGE = re.compile(r"(reduc|lower|decreas|increase|% of|titrat|\d+\s*%)", re.IGNORECASE)


def _phenotype(gene: str, lookup_value: str, phenotypes: dict[str, str]) -> tuple[str, str]:
    """Gene key and phenotype as a patient's result states them: HLA results are per allele."""
    if gene.startswith("HLA-"):
        allele, _, result = lookup_value.partition(" ")
        return f"{gene}{allele}", result.strip().lower()
    return gene, phenotypes.get(gene, lookup_value).strip().lower()


def _is_reference(gene: str, value: str) -> bool:
    return value in REFERENCE_VALUES or value.startswith("normal ") or (gene.startswith("HLA-") and value == "negative")


def _severity(recommendation: str, classification: str) -> str:
    if classification == "Optional":
        return "low"
    if AVOID.search(recommendation) and classification == "Strong":
        return "high"
    if AVOID.search(recommendation) or DOSE_CHANGE.search(recommendation):
        return "moderate"
    return "low"


def derive(recommendations_csv: Path, pairs_csv: Path) -> list[dict[str, str]]:
    with pairs_csv.open(newline="") as handle:
        pairs = {(row["gene"], row["drug"]): row for row in csv.DictReader(handle)}
    with recommendations_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))

    normal_text: dict[tuple[str, str], str] = {}
    candidates: list[tuple[str, str, str, str, dict[str, str]]] = []
    for row in rows:
        lookup = json.loads(row["lookup_key"])
        phenotypes = json.loads(row["phenotypes"])
        resolved = [_phenotype(gene, value, phenotypes) for gene, value in lookup.items()]
        non_reference = [(key, value) for key, value in resolved if not _is_reference(key, value)]
        if not non_reference:
            normal_text.setdefault((row["drug"], row["population"]), row["recommendation"])
            continue
        if len(non_reference) != 1:
            continue
        gene_key, phenotype = non_reference[0]
        if phenotype in UNINFORMATIVE or phenotype.startswith("uncertain"):
            continue
        gene = gene_key.split("*")[0]
        if pairs.get((gene, row["drug"]), {}).get("cpic_level") not in LEVELS:
            continue
        candidates.append((gene_key, phenotype, row["drug"], row["population"], row))

    best: dict[tuple[str, str, str], dict[str, str]] = {}
    for gene_key, phenotype, drug, population, row in candidates:
        recommendation = row["recommendation"].strip()
        _, _, further_sentences = recommendation.partition(". ")
        if NOT_ACTIONABLE.search(recommendation) and not AVOID.search(further_sentences):
            continue
        if row["classification"] in ("No Recommendation", "n/a"):
            continue
        if recommendation == normal_text.get((drug, population)):
            continue
        severity = _severity(recommendation, row["classification"])
        pair = pairs[(gene_key.split("*")[0], drug)]
        implication = json.loads(row["implications"]).get(gene_key.split("*")[0], "")
        where = "" if population in ("general", "adults") else f" [{population.strip()}]"
        message = f"{implication.rstrip('.')}. CPIC ({row['classification']}){where}: {recommendation}"
        candidate = {
            "rule_id": "",
            "gene": gene_key,
            "phenotype": phenotype,
            "drug": DRUG_NAMES.get(drug, drug),
            "severity": severity,
            "tier": "interruptive" if severity == "high" else "passive",
            "message": message,
            "source": (
                f"CPIC guideline {row['guideline']} ({pair['guideline_url']}), CPIC level {pair['cpic_level']}; "
                f"PMID {pair['cpic_publications_pmid'].replace(';', ', ')}; CPIC database {row['cpic_version']} (CC0)"
            ),
        }
        key = (gene_key, phenotype, candidate["drug"])
        kept = best.get(key)
        if kept is None or SEVERITY_RANK[severity] < SEVERITY_RANK[kept["severity"]]:
            best[key] = candidate

    derived = sorted(best.values(), key=lambda rule: (rule["drug"], rule["gene"], rule["phenotype"]))
    for rule in derived:
        slug = re.sub(r"[^a-z0-9]+", "_", f"{rule['gene']}.{rule['phenotype']}".lower()).strip("_")
        rule["rule_id"] = f"cpic.{rule['drug'].replace(' ', '_')}.{slug}"
    return derived


def main(argv: list[str]) -> None:
    recommendations_csv, pairs_csv, out_csv = (Path(arg) for arg in argv)
    rules = derive(recommendations_csv, pairs_csv)
    fields = ["rule_id", "gene", "phenotype", "drug", "severity", "tier", "message", "source"]
    with out_csv.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rules)


if __name__ == "__main__":
    main(sys.argv[1:])
