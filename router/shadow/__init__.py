"""Shadow evaluation: re-ask a sample of cheaper-tier answers of the reference tier and let a
judge model compare them (``evaluator``: the queue and its workers; ``judge``: the prompt)."""
