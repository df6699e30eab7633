"""Assistant chat (ShareGPT / messages data): replies scored by overlap with the reference reply."""

from ft_assets.tasks.common import GENERIC_PROBES, Task

TASK = Task(
    name="chat",
    metrics={"rouge_l": {"scorer": "rouge_l"}, "chrf": {"scorer": "chrf"}},
    primary_metric="rouge_l",
    probes=GENERIC_PROBES + (({"role": "user", "content": "Give me one tip for writing clear emails."},),),
    probe_max_new_tokens=96,
    intended_use="A chat assistant tuned on the recipe's conversations.",
    limitations="Overlap metrics (ROUGE-L, chrF) reward wording close to the reference, not helpfulness.",
)

# Any prompt -> completion data: normalized exact match and ROUGE-L, exact match deciding.
GENERIC = Task(
    name="generic",
    metrics={"exact_match": {"scorer": "exact_match"}, "rouge_l": {"scorer": "rouge_l"}},
    primary_metric="exact_match",
)
