"""Grade-school math (GSM8K-style): worked answers ending ``#### N``, scored on the final number."""

from ft_assets.tasks.common import Task

SYSTEM_PROMPT = "Solve the problem step by step, then give the final answer on its own line as '#### <number>'."

TASK = Task(
    name="math",
    metrics={"numeric_match": {"scorer": "numeric_match"}, "exact_match": {"scorer": "exact_match"}},
    primary_metric="numeric_match",
    system_prompt=SYSTEM_PROMPT,
    probes=tuple(({"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": q}) for q in (
        "Tom has 3 apples and buys 4 more. How many apples does he have?",
        "A box holds 12 eggs. How many eggs are in 5 boxes?",
        "Sara had 20 dollars and spent 7. How much is left?",
    )),
    probe_max_new_tokens=128,
    intended_use="Answering grade-school math word problems with a worked solution and a final number.",
    limitations="Arithmetic in long chains is error-prone for small models; check numeric_match per problem type.",
)
