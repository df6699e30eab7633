"""Decontam: train texts sharing a long word n-gram (or a whole short text) with an eval text are flagged."""

from __future__ import annotations

import random

import pytest

from ft_assets.data.decontam import contaminated

VOCAB = [f"w{i}" for i in range(5000)]


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(n))


def test_verbatim_short_eval_question_in_train_is_found():
    question = "How many employees work in the Sales department?"
    train = [
        "List all departments.",
        "Context: some schema. " + question + " Answer with SQL.",
        "How many employees work in the Marketing department?",  # one word differs
    ]
    assert contaminated(train, ["Who earns the most?", question]) == [
        (1, 1, "how many employees work in the sales department")
    ]


def test_long_shared_13_gram_found_and_12_gram_not():
    rng = random.Random(0)
    shared = _text(rng, 13)
    reference = _text(rng, 40) + " " + shared + " " + _text(rng, 40)
    train = [
        _text(rng, 30) + " " + shared + " " + _text(rng, 30),
        _text(rng, 30) + " " + " ".join(shared.split()[:12]) + " " + _text(rng, 30),
    ]
    first_12 = " ".join(shared.split()[:12])
    assert contaminated(train, [reference]) == [(0, 0, shared)]
    assert contaminated(train, [reference], ngram=12) == [(0, 0, first_12), (1, 0, first_12)]


def test_case_and_punctuation_differences_are_ignored():
    reference = "The Quick brown fox jumps over the lazy dog while the farmer sleeps in the barn at noon."
    train = ["the quick, brown FOX -- jumps over the lazy dog; while the farmer sleeps in the barn at noon!!"]
    assert contaminated(train, [reference]) == [
        (0, 0, "the quick brown fox jumps over the lazy dog while the farmer sleeps")
    ]


def test_no_false_positive_on_unrelated_texts():
    rng = random.Random(1)
    train = [_text(rng, rng.randrange(20, 200)) for _ in range(2000)]
    references = [_text(rng, rng.randrange(13, 60)) for _ in range(300)]
    assert contaminated(train, references) == []


def test_short_train_text_inside_a_reference_is_found():
    reference = "Translate to French: the weather is lovely today and I will go for a long walk."
    assert contaminated(["The weather is lovely today!", "the weather is awful today"], [reference]) == [
        (0, 0, "the weather is lovely today")
    ]


def test_one_entry_per_train_text_at_its_earliest_match():
    rng = random.Random(2)
    first, second = _text(rng, 13), _text(rng, 13)
    references = [_text(rng, 5) + " " + second, first + " " + _text(rng, 5)]
    train = [_text(rng, 10) + " " + first + " " + _text(rng, 10) + " " + second]
    assert contaminated(train, references) == [(0, 1, first)]


def test_first_reference_wins_for_the_same_n_gram():
    shared = " ".join(f"x{i}" for i in range(13))
    assert contaminated(["pre " + shared], ["a " + shared, "b " + shared]) == [(0, 0, shared)]


def test_unicode_words_and_positions():
    reference = "Wie viele Mitarbeiter arbeiten in der Abteilung Verkauf in München?"
    train = ["Frage: wie viele MITARBEITER arbeiten in der Abteilung Verkauf in münchen"]
    assert contaminated(train, [reference], ngram=13) == [
        (0, 0, "wie viele mitarbeiter arbeiten in der abteilung verkauf in münchen")
    ]


def test_empty_inputs():
    assert contaminated([], ["a reference"]) == []
    assert contaminated(["a train text"], []) == []
    assert contaminated(["", "!!"], ["", "?"]) == []
    with pytest.raises(ValueError):
        contaminated(["a"], ["a"], ngram=0)


def test_many_texts_stay_fast_and_exact():
    rng = random.Random(3)
    references = [_text(rng, rng.randrange(5, 30)) for _ in range(1000)]
    train = [_text(rng, rng.randrange(50, 150)) for _ in range(5000)]
    planted = {}
    for i in range(0, 5000, 250):
        ref = i // 250
        train[i] += " " + references[ref].upper()
        planted[i] = ref
    found = contaminated(train, references)
    assert {t: r for t, r, _ in found} == planted
