"""The label-mask gate: proves, before any training step, that the loss falls on the replies and nothing else.

Template and EOS mismatches are the most reported fine-tuning failure: a model trained on the prompt, or
never trained on its stop token, looks fine in the loss curve and rambles at inference. These checks read
the labels the trainer would use (``-100`` = not trained) next to the text each example should teach.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

IGNORE_INDEX = -100


@dataclass
class MaskProblem:
    example: int
    reason: str


@dataclass
class MaskReport:
    examples: int
    mean_trained_share: float
    min_trained_share: float
    max_trained_share: float
    problems: list[MaskProblem] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.examples > 0 and not self.problems

    def summary(self, limit: int = 5) -> str:
        head = (f"{self.examples} examples, trained share of tokens mean {self.mean_trained_share:.3f} "
                f"(min {self.min_trained_share:.3f}, max {self.max_trained_share:.3f})")
        if self.passed:
            return head + ": every example trains its reply and its EOS, and nothing of its prompt"
        lines = [f"example {p.example}: {p.reason}" for p in self.problems[:limit]]
        more = f" (and {len(self.problems) - limit} more)" if len(self.problems) > limit else ""
        return head + f"; {len(self.problems)} problems{more}:\n" + "\n".join(lines)


def tokenize_prompt_completion(tokenizer, prompt: list[dict], completion: list[dict],
                               max_length: int | None = None) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` exactly as trl's SFTTrainer builds them for a conversational prompt/completion.

    The prompt is rendered with the tokenizer's own chat template and a generation prompt; the completion is
    what the template adds after it; truncation keeps the start, as trl does.
    """
    prompt_ids = list(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True,
                                                    return_dict=True)["input_ids"])
    full_ids = list(tokenizer.apply_chat_template(prompt + completion, tokenize=True, return_dict=True)["input_ids"])
    shared = 0
    for a, b in zip(prompt_ids, full_ids, strict=False):
        if a != b:
            break
        shared += 1
    labels = [IGNORE_INDEX] * shared + full_ids[shared:]
    if max_length is not None:
        full_ids, labels = full_ids[:max_length], labels[:max_length]
    return full_ids, labels


def _normalize(text: str) -> str:
    return " ".join(text.split())


def check_label_mask(tokenizer, input_ids: Sequence[Sequence[int]], labels: Sequence[Sequence[int]],
                     replies: Sequence[str], max_length: int | None = None) -> MaskReport:
    """Check each example: some but not all tokens trained, the trained tokens are the reply, EOS is trained."""
    eos_id = tokenizer.eos_token_id
    shares, problems = [], []
    for i, (ids, labs, reply) in enumerate(zip(input_ids, labels, replies, strict=True)):
        ids, labs = list(ids), list(labs)
        trained = [t for t, lab in zip(ids, labs, strict=True) if lab != IGNORE_INDEX]
        share = len(trained) / max(len(ids), 1)
        shares.append(share)
        if not trained:
            problems.append(MaskProblem(i, "no token is trained (prompt fills max_length, or the mask is empty)"))
            continue
        if len(trained) == len(ids):
            problems.append(MaskProblem(i, "every token is trained: the prompt is not masked"))
            continue
        if any(lab != IGNORE_INDEX and lab != t for t, lab in zip(ids, labs, strict=True)):
            problems.append(MaskProblem(i, "labels differ from the input tokens they should copy"))
            continue
        first = next(j for j, lab in enumerate(labs) if lab != IGNORE_INDEX)
        if any(lab == IGNORE_INDEX for lab in labs[first:]):
            problems.append(MaskProblem(i, "the trained span has holes: part of the reply is masked"))
            continue
        text = tokenizer.decode(trained, skip_special_tokens=True)
        if max_length and len(ids) >= max_length and _normalize(reply).startswith(_normalize(text)):
            problems.append(MaskProblem(i, f"the reply is cut off at max_length={max_length} tokens, so its end and "
                                           "EOS are never trained: raise max_length or drop long examples"))
            continue
        if _normalize(reply) not in _normalize(text):
            problems.append(MaskProblem(i, f"trained tokens {text[:80]!r} are not the reply {reply[:80]!r}"))
            continue
        if _normalize(text).replace(_normalize(reply), "", 1).strip():
            problems.append(MaskProblem(i, f"trained tokens hold more than the reply: {text[:120]!r}"))
            continue
        if eos_id is None or eos_id not in trained:
            problems.append(MaskProblem(i, f"EOS ({tokenizer.eos_token!r}) is not trained: the model would not "
                                           "learn to stop (template and tokenizer EOS disagree?)"))
    return MaskReport(
        examples=len(shares),
        mean_trained_share=sum(shares) / len(shares) if shares else 0.0,
        min_trained_share=min(shares, default=0.0),
        max_trained_share=max(shares, default=0.0),
        problems=problems,
    )


def check_chat_examples(tokenizer, rows: Sequence[dict], max_length: int | None = None,
                        limit: int | None = None) -> MaskReport:
    """The gate on SFT rows (``prompt`` / ``completion`` message lists), tokenized as trl tokenizes them."""
    rows = list(rows)[:limit] if limit else list(rows)
    pairs = [tokenize_prompt_completion(tokenizer, r["prompt"], r["completion"], max_length) for r in rows]
    replies = [r["completion"][-1]["content"] for r in rows]
    return check_label_mask(tokenizer, [p[0] for p in pairs], [p[1] for p in pairs], replies, max_length)


class LabelMaskError(ValueError):
    """Training refused: the label mask would train the wrong tokens."""
