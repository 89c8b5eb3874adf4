"""The render path, in the order a request takes it: plan (validate and prepare, no side effects) → retrieve (the
LCEL chain) → run (an executor, under the GPU queue) → record (outputs, sidecars, history, metrics)."""
