"""The prompts' shared prefix runs once: same generations and perplexity as running every row whole."""

from __future__ import annotations

import pytest

from ft_assets.evaluation.evaluate import GenerationSettings, completion_perplexity, generate, load_variant
from ft_assets.evaluation.shared_prefix import MIN_PREFIX_TOKENS, SharedPrefix, common_prefix_length
from ft_assets.tasks.text_to_sql import SCHEMA_SUMMARY, generate_clean_pairs


def test_common_prefix_length_leaves_each_sequence_its_own_tokens():
    assert common_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5, 6], [1, 2, 9]]) == 2
    assert common_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2  # one token kept for each row
    assert common_prefix_length([[1, 2, 3], [1, 2, 3, 4, 5]], keep=2) == 1
    assert common_prefix_length([[7, 1], [8, 1]]) == 0
    assert common_prefix_length([]) == 0


def _rows(n: int) -> list[dict]:
    pairs = generate_clean_pairs(n, seed=3)
    return [{"record_id": f"r{i}", "prompt": [{"role": "system", "content": SCHEMA_SUMMARY},
                                              {"role": "user", "content": q}],
             "completion": [{"role": "assistant", "content": sql}]} for i, (q, sql) in enumerate(pairs)]


def test_sharing_the_prefix_changes_no_generation_and_no_perplexity(scratch_model_dir):
    """Rows of different lengths in batches of 4 (padding between prefix and question): each row sees the tokens
    and positions it would alone, so greedy generations are identical and perplexity equal."""
    model, tokenizer = load_variant("base", scratch_model_dir)
    rows = _rows(10)
    prompts = [tokenizer(tokenizer.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False),
                         add_special_tokens=False)["input_ids"] for r in rows]
    prefix = SharedPrefix.prefill(model, prompts)
    assert len(prefix.tokens) >= MIN_PREFIX_TOKENS and prefix.cache is not None  # the system prompt, at least
    assert len({len(p) for p in prompts}) > 1
    shared, whole = (GenerationSettings(12, 4, share_prefix=True), GenerationSettings(12, 4, share_prefix=False))
    assert generate(model, tokenizer, rows, shared) == generate(model, tokenizer, rows, whole)
    assert completion_perplexity(model, tokenizer, rows, batch_size=4, share_prefix=True) == pytest.approx(
        completion_perplexity(model, tokenizer, rows, batch_size=4, share_prefix=False), rel=1e-5)
    # The shared cache is copied per batch, never extended in place: a second pass gives the same answers.
    assert generate(model, tokenizer, rows, shared) == generate(model, tokenizer, rows, whole)


def test_prompts_without_a_common_prefix_run_whole(scratch_model_dir):
    model, _ = load_variant("base", scratch_model_dir)
    prefix = SharedPrefix.prefill(model, [[5, 6, 7] * 4, [9, 6, 7] * 4])
    assert prefix.tokens == [] and prefix.cache is None
    batch = prefix.batch([[5, 6, 7], [9, 7]], pad_id=0, device=model.device)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [0, 9, 7]]  # plain left padding
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 1, 1]]
    assert batch["suffix_position_ids"].tolist() == [[0, 1, 2], [0, 0, 1]]
