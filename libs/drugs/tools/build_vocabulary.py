"""Regenerate the derived tables in mtm/drugs/data from the shared open datasets (by hand, not at runtime).

    uv run python libs/drugs/tools/build_vocabulary.py [--shared /work/shared/data]

Step 1 writes ingredient_synonyms.csv from the DrugBank open vocabulary; step 2 writes rxnorm_codes.csv from
CPIC, HL7 PDDI-CDS and Synthea codes, keeping a product code only when its display resolves with the
resolver built from step 1 (so every shipped code is consistent with text resolution); step 3 (with --ndc)
writes ndc_brands.csv, product names from the FDA NDC Directory whose every substance resolves.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from collections import defaultdict
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "src" / "mtm" / "drugs" / "data"
sys.path.insert(0, str(DATA.parents[2]))

from mtm.drugs import vocabulary as vocabulary_module  # noqa: E402
from mtm.drugs.resolve import resolve_text  # noqa: E402
from mtm.drugs.vocabulary import FILLER_WORDS, RELEASE_PHRASES, phrase_key  # noqa: E402

DRUGBANK_SOURCE = "DrugBank Open Data vocabulary (CC0 1.0) {id}"
CPIC_SOURCE = "CPIC cpic_drugs.csv (CC0 1.0); RxNorm ingredient RXCUI (NLM RxNorm)"
PDDI_SOURCE = "HL7 PDDI-CDS value set {valueset} (CC0 1.0); RxNorm code and name (NLM RxNorm)"
SYNTHEA_SOURCE = "Synthea via smart-on-fhir/generated-sample-data (Apache-2.0); RxNorm code and name (NLM RxNorm)"

# Metal cations: "potassium chloride", "ferrous sulfate" are the ingredient itself, never a salt of it.
CATIONS = frozenset(
    "potassium sodium calcium magnesium ferrous ferric iron zinc lithium aluminum aluminium ammonium silver "
    "barium copper cupric gallium strontium cobalt manganese chromium cesium bismuth selenium".split()
)
# Synonyms that are everyday words or too generic to name a single ingredient.
GENERIC_SYNONYMS = frozenset(
    "chalk salt water sugar alcohol oil tar gold silver lime soda vitamin vitamins hormone insulin sulfur "
    "oxygen air estrogen estrogens progestin heparin sodium opium".split()
)
# DrugBank entries whose names are everyday words ("water pill" is slang for a diuretic, not water).
NOT_MEDICATION_NAMES = frozenset({"water"})
ALLOWED_SYNONYM = re.compile(r"^[A-Za-z][A-Za-z0-9 '.\-]*$")


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def strip_salt(name: str, salts: frozenset[str]) -> str:
    words = name.split()
    while len(words) > 1 and words[-1] in salts and words[-2] not in CATIONS:
        words.pop()
    return " ".join(words)


def is_foreign_variant(key: str, canonical: str) -> bool:
    """Latin/French/Spanish spellings ("simvastatinum", "simvastatina") add size, not recall."""
    if " " in key or " " in canonical or abs(len(key) - len(canonical)) > 3:
        return False
    stem = min(len(key), len(canonical)) - 2
    return stem >= 4 and key[:stem] == canonical[:stem]


def build_synonyms(shared: Path) -> None:
    salts = frozenset(phrase_key(row["salt"]) for row in read_csv(DATA / "salts.csv"))
    curated = {phrase_key(row["synonym"]): row["ingredient"] for row in read_csv(DATA / "curated_synonyms.csv")}
    reserved = set(FILLER_WORDS) | set(RELEASE_PHRASES) | set(salts)
    reserved.update(phrase_key(row["phrase"]) for row in read_csv(DATA / "dose_forms.csv"))

    drugbank = read_csv(shared / "drugbank-open-vocabulary" / "drugbank_vocabulary.csv")
    targets: dict[str, set[str]] = defaultdict(set)
    sources: dict[str, str] = {}
    common_names: dict[str, str] = {}
    for row in drugbank:
        common = phrase_key(row["Common name"])
        synonyms = [s.strip() for s in row["Synonyms"].split("|") if s.strip()]
        keys = {common} | {phrase_key(s) for s in synonyms if s.isascii() and ALLOWED_SYNONYM.match(s)}
        if common in NOT_MEDICATION_NAMES:
            continue
        if not row["Common name"].isascii() or not ALLOWED_SYNONYM.match(row["Common name"]):
            continue
        canonical = curated.get(common) or strip_salt(common, salts)
        source = DRUGBANK_SOURCE.format(id=row["DrugBank ID"])
        common_names[common] = canonical
        for key in keys:
            if key in reserved or key in GENERIC_SYNONYMS or len(key.split()) > 4:
                continue
            if key != common and (len(key) < 5 or is_foreign_variant(key, canonical)):
                continue
            if key.split()[-1] in salts and not canonical.endswith(key.split()[-1]):
                continue
            if any(ch.isdigit() for ch in key) and not any(ch.isdigit() for ch in common):
                continue
            targets[key].add(canonical)
            sources.setdefault(key, source)
        targets[phrase_key(canonical)].add(canonical)
        sources.setdefault(phrase_key(canonical), source)

    rows: list[list[str]] = []
    dropped: list[str] = []
    for key in sorted(targets):
        if key in curated:
            continue
        candidates = targets[key]
        if len(candidates) > 1 and key in common_names:
            candidates = {common_names[key]}
        if len(candidates) != 1:
            dropped.append(f"{key} -> {sorted(candidates)}")
            continue
        rows.append([key, next(iter(candidates)), sources[key]])
    write_csv(DATA / "ingredient_synonyms.csv", ["synonym", "ingredient", "source"], rows)
    print(f"ingredient_synonyms.csv: {len(rows)} rows; {len(dropped)} ambiguous synonyms dropped")


def build_rxnorm_codes(shared: Path) -> None:
    vocabulary_module.vocabulary.cache_clear()
    vocabulary_module._fuzzy_index.cache_clear()
    write_csv(DATA / "rxnorm_codes.csv", ["rxcui", "ingredients", "display", "source"], [])
    vocab = vocabulary_module.vocabulary()
    rows: dict[str, list[str]] = {}
    for row in read_csv(shared / "cpic" / "cpic_drugs.csv"):
        key = phrase_key(row["name"])
        if row["rxnorm_rxcui"] and key in vocab.ingredients:
            rows[row["rxnorm_rxcui"]] = [
                row["rxnorm_rxcui"],
                vocab.ingredients[key],
                row["name"],
                CPIC_SOURCE,
            ]
    skipped: list[str] = []
    for row in read_csv(shared / "hl7-pddi-cds" / "pddi_cds_valueset_codes.csv"):
        if "rxnorm" not in row["system"] or row["code"] in rows:
            continue
        valueset = row["valueset_id"].removeprefix("valueset-").removesuffix("-exclude")
        valueset_ingredient = vocab.ingredients.get(phrase_key(valueset))
        resolution = resolve_text(row["display"])
        if valueset_ingredient is None or valueset_ingredient not in resolution.ingredients:
            skipped.append(f"{row['code']} {row['display']}")
            continue
        source = PDDI_SOURCE.format(valueset=row["valueset_id"])
        rows[row["code"]] = [row["code"], "|".join(resolution.ingredients), row["display"], source]
    for row in read_csv(shared / "synthea-smart-r4-200" / "medication_codes.csv"):
        resolution = resolve_text(row["display"])
        if not resolution.resolved:
            skipped.append(f"{row['rxnorm_code']} {row['display']} (synthea)")
            continue
        ingredients = "|".join(resolution.ingredients)
        rows[row["rxnorm_code"]] = [row["rxnorm_code"], ingredients, row["display"], SYNTHEA_SOURCE]
    ordered = sorted(rows.values(), key=lambda r: int(r[0]))
    write_csv(DATA / "rxnorm_codes.csv", ["rxcui", "ingredients", "display", "source"], ordered)
    print(f"rxnorm_codes.csv: {len(ordered)} codes; {len(skipped)} displays not resolvable, skipped")
    for line in skipped:
        print("  skipped", line)


# The origin (FDA NDC Directory via nasheydari/HypOp) is stated once in SOURCE.md; each row names its product.
NDC_SOURCE = "NDC {ndc}"
NDC_FILES = ("simplex-labels", "nverts", "simplices", "node-labels")
NDC_LABEL = re.compile(r"^(?P<name>.*?) \((?P<ndc>\d{4,5}-\d{3,4})\)")
# Product names that are words of everyday English or of a sig; as a brand they would swallow free text.
NDC_NAME_STOPLIST = frozenset({"allergy", "sleep", "cold", "pain", "relief", "cough", "care", "daily", "night", "day"})
MAX_NDC_INGREDIENTS = 4


def read_ndc(ndc: Path) -> dict[str, tuple[set[frozenset[str]], str]]:
    """Proprietary name -> every substance set its NDC products list, with the first product NDC."""
    paths = {name: ndc / f"NDC-substances-full-{name}.txt" for name in NDC_FILES}
    labels = paths["simplex-labels"].read_text(encoding="utf-8").splitlines()
    sizes = [int(line) for line in paths["nverts"].read_text(encoding="utf-8").split()]
    members = [int(line) for line in paths["simplices"].read_text(encoding="utf-8").split()]
    substances = dict(
        line.split(" ", 1) for line in paths["node-labels"].read_text(encoding="utf-8").splitlines() if " " in line
    )
    products: dict[str, tuple[set[frozenset[str]], str]] = {}
    position = 0
    for label, size in zip(labels, sizes, strict=True):
        ids = members[position : position + size]
        position += size
        match = NDC_LABEL.match(label)
        if not match:
            continue
        name = phrase_key(match.group("name"))
        sets, _ = products.setdefault(name, (set(), match.group("ndc")))
        sets.add(frozenset(substances[str(node)] for node in ids))
    return products


def ndc_ingredients(substances: frozenset[str]) -> tuple[str, ...] | None:
    """The ingredients of one NDC product, or None unless every substance resolves to exactly one."""
    if not 0 < len(substances) <= MAX_NDC_INGREDIENTS:
        return None
    ingredients: set[str] = set()
    for substance in substances:
        resolved = resolve_text(substance).ingredients
        if len(resolved) != 1:
            return None
        ingredients.add(resolved[0])
    return tuple(sorted(ingredients))


def build_ndc_brands(ndc: Path) -> None:
    """Brand and product names from the FDA NDC Directory: a name is kept only when every product under it lists
    the same substances and each substance resolves to exactly one ingredient (a product is fully resolved or
    not listed), and only when mtm could not already resolve the name."""
    vocabulary_module.vocabulary.cache_clear()
    vocabulary_module._fuzzy_index.cache_clear()
    resolve_text.cache_clear()
    write_csv(DATA / "ndc_brands.csv", ["name", "ingredients", "source"], [])
    vocab = vocabulary_module.vocabulary()
    reserved = set(FILLER_WORDS) | set(RELEASE_PHRASES) | set(vocab.dose_forms) | set(vocab.salts)
    rows: list[list[str]] = []
    kept_out = 0
    for name, (sets, first) in sorted(read_ndc(ndc).items()):
        if not re.search(r"[a-z]{3}", name) or name in reserved or name in NDC_NAME_STOPLIST:
            kept_out += 1
            continue
        if resolve_text(name).resolved:
            kept_out += 1
            continue
        # Products under one name may list different salts of the same drug; they must agree on ingredients.
        resolved_sets = {ndc_ingredients(substances) for substances in sets}
        if len(resolved_sets) != 1 or None in resolved_sets:
            kept_out += 1
            continue
        ingredients = next(iter(resolved_sets))
        assert ingredients is not None
        rows.append([name, ";".join(ingredients), NDC_SOURCE.format(ndc=first)])
    write_csv(DATA / "ndc_brands.csv", ["name", "ingredients", "source"], rows)
    print(f"ndc_brands.csv: {len(rows)} product names; {kept_out} left out (ambiguous, unresolvable or known)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("/work/shared/data"))
    parser.add_argument(
        "--ndc",
        type=Path,
        help="directory with NDC-substances-full-{simplex-labels,nverts,simplices,node-labels}.txt "
        "(nasheydari/HypOp commit 25742982, data/hypergraph_data/NDC/NDC-substances-full); "
        "the brand step runs only with it, before the RxNorm step",
    )
    args = parser.parse_args()
    build_synonyms(args.shared)
    if args.ndc is not None:
        build_ndc_brands(args.ndc)
    build_rxnorm_codes(args.shared)


if __name__ == "__main__":
    main()
