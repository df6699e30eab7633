"""Text classification: the reply is one label of a fixed set; accuracy and macro-F1 over that set."""

from ft_assets.tasks.common import Task

TASK = Task(
    name="classification",
    metrics={"accuracy": {"scorer": "label_accuracy"}, "macro_f1": {"scorer": "macro_f1"}},
    primary_metric="accuracy",
    system_prompt="Answer with the label only.",
    probes=(({"role": "system", "content": "Answer with the label only."},
             {"role": "user", "content": "This was great, thank you!"}),),
    probe_max_new_tokens=16,
    intended_use="Assigning one label of the recipe's label set to a text.",
    limitations="Labels outside the recipe's set count as wrong; set task.metrics.*.labels to the full set.",
)
