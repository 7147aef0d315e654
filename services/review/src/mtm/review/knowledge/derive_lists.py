"""Add mtm's rule columns (rule_id, severity, tier, message, source) to the staged ONC and VA NDF-RT pair lists.

Run: python services/review/src/mtm/review/knowledge/derive_lists.py [/work/shared/data] [out_dir]

The staged lists give pairs and their source's own rating only. The knowledge base reads every severity and
message from its data files, so the rating each list implies is written into the rows here, once, where a
reader of the CSV sees it (and a site can re-rate one pair by editing its row):

* ONC high-priority pairs (Phansalkar 2012): high / interruptive, the panel's concern as the message.
* ONC non-interruptive pairs (Phansalkar 2013): low / passive (the panel judged them not worth interrupting).
* VA NDF-RT "Critical": high / interruptive; "Significant": moderate / passive (VA: monitor and adjust).

The staged columns are copied unchanged; the added ones come after them.

It also writes pgx_diplotypes.csv (gene, diplotype, phenotype) from CPIC's diplotype-to-phenotype tables as
packaged by PharmCAT (gene_phenotypes/*.json, CC0 content), so a lab result given only as star alleles
("*2/*2") is read as the phenotype the CPIC rules are keyed on.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

ONC_HIGH_SOURCE = "ONC high-priority DDI list (Phansalkar S et al. J Am Med Inform Assoc 2012;19:735-743)"
ONC_NONINTERRUPTIVE_SOURCE = "ONC non-interruptive DDI list (Phansalkar S et al. J Am Med Inform Assoc 2013;20:489-493)"
VA_SOURCE = "VA NDF-RT drug interaction (U.S. Department of Veterans Affairs, public domain)"
RULE_COLUMNS = ["rule_id", "severity", "tier", "message", "source"]


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or ()), list(reader)


def _write(path: Path, header: list[str], rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _onc(row: dict[str, str], *, high: bool) -> dict[str, str]:
    number, pair = row["pair_no"], f"{row['object_class']} + {row['precipitant_class']}"
    if high:
        message = (
            f"{row['concern_editorial']}. ONC high-priority interaction ({pair}): avoid the combination or use only "
            "with specific monitoring."
        )
    else:
        message = (
            f"{pair}: an expert panel judged this interaction non-interruptive (minor or usually managed); "
            "routine monitoring."
        )
    return {
        "rule_id": f"onc-{'high' if high else 'ni'}.{number}",
        "severity": "high" if high else "low",
        "tier": "interruptive" if high else "passive",
        "message": message,
        "source": f"{ONC_HIGH_SOURCE if high else ONC_NONINTERRUPTIVE_SOURCE}, pair {number}",
    }


def onc_high(row: dict[str, str]) -> dict[str, str]:
    return _onc(row, high=True)


def onc_noninterruptive(row: dict[str, str]) -> dict[str, str]:
    return _onc(row, high=False)


def va(row: dict[str, str]) -> dict[str, str]:
    rating = row["severity"]
    critical = rating.strip().lower() == "critical"
    classes = " / ".join(part for part in (row.get("drug1_class"), row.get("drug2_class")) if part)
    message = f"VA NDF-RT lists this as a {rating} interaction ({row['ndfrt_label']})"
    message += f"; classes: {classes}." if classes else "."
    message += " Avoid or adjust and monitor." if critical else " Monitor and adjust if needed."
    return {
        "rule_id": f"va.{row['ndfrt_nui']}",
        "severity": "high" if critical else "moderate",
        "tier": "interruptive" if critical else "passive",
        "message": message,
        "source": f"{VA_SOURCE} {row['ndfrt_nui']} ({rating})",
    }


DERIVED = (
    ("onc-ddi/onc_high_priority_pairs.csv", onc_high),
    ("onc-ddi/onc_noninterruptive_pairs.csv", onc_noninterruptive),
    ("va-ndfrt-ddi/ndfrt_va_ddi_pairs.csv", va),
)


DIPLOTYPE_SOURCE = "CPIC diplotype-phenotype table for {gene} (PharmCAT {gene}.json, version {version}; CC0)"
UNINFORMATIVE = frozenset({"indeterminate", "n/a", ""})


def diplotypes(shared: Path, out: Path) -> None:
    rows = []
    for path in sorted((shared / "cpic" / "gene_phenotypes").glob("*.json")):
        table = json.loads(path.read_text(encoding="utf-8"))
        gene = table["gene"]
        for entry in table["diplotypes"]:
            phenotype = (entry.get("generesult") or "").strip()
            if phenotype.lower() in UNINFORMATIVE or not entry["diplotype"].startswith("*"):
                continue
            source = DIPLOTYPE_SOURCE.format(gene=gene, version=table.get("version", "?"))
            rows.append({"gene": gene, "diplotype": entry["diplotype"], "phenotype": phenotype, "source": source})
    _write(out / "pgx_diplotypes.csv", ["gene", "diplotype", "phenotype", "source"], rows)
    print(f"pgx_diplotypes.csv: {len(rows)} rows")


def main(shared: Path, out: Path) -> None:
    for relative, derive in DERIVED:
        header, rows = _read(shared / relative)
        staged = [column for column in header if column not in RULE_COLUMNS]
        for row in rows:
            # The VA list's own rating column is also called severity: keep it as va_severity.
            if "va-ndfrt" in relative:
                row["va_severity"] = row["severity"]
            row.update(derive(row))
        if "va-ndfrt" in relative:
            staged = [("va_severity" if column == "severity" else column) for column in staged]
        rows = [{column: row[column] for column in staged + RULE_COLUMNS} for row in rows]
        _write(out / Path(relative).name, staged + RULE_COLUMNS, rows)
        print(f"{Path(relative).name}: {len(rows)} rows")
    diplotypes(shared, out)


if __name__ == "__main__":
    shared = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/work/shared/data")
    main(shared, Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).resolve().parent / "data")
