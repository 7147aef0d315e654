"""No dead rules: every ingredient the knowledge base names is one the drug vocabulary can produce."""

from __future__ import annotations

import pytest

from mtm.drugs import resolve
from mtm.review.knowledge import load_bundled

pytestmark = pytest.mark.unit

KB = load_bundled()


def _named() -> list[str]:
    names = set(KB.named_ingredients())
    for members in KB.class_members.values():
        names |= members
    return sorted(names)


NAMED = _named()


def test_the_knowledge_base_names_hundreds_of_ingredients() -> None:
    assert len(NAMED) > 800


@pytest.mark.parametrize("name", NAMED)
def test_every_named_ingredient_is_produced_by_the_vocabulary(name: str) -> None:
    # A rule keyed on a name the vocabulary never yields can never fire (lithium vs lithium carbonate,
    # benzatropine vs benztropine): resolving the name itself must come back to the same rule key.
    resolution = resolve(name)
    assert [KB.canonical(ingredient) for ingredient in resolution.ingredients] == [name], resolution.ingredients


@pytest.mark.parametrize(
    ("text", "rule_key"),
    [
        ("Lithium Carbonate 300 MG Oral Capsule", "lithium"),
        ("lithium citrate 8 mEq/5 mL oral solution", "lithium"),
        ("Benztropine Mesylate 1 MG Oral Tablet", "benztropine"),
        ("Thioguanine 40 MG Oral Tablet", "thioguanine"),
        ("Methamphetamine Hydrochloride 5 MG Oral Tablet", "methamphetamine"),
        ("Methylergonovine Maleate 0.2 MG Oral Tablet", "methylergonovine"),
    ],
)
def test_names_that_used_to_be_dead_now_reach_their_rules(text: str, rule_key: str) -> None:
    assert [KB.canonical(ingredient) for ingredient in resolve(text).ingredients] == [rule_key]
