"""The standard decoding strategies. Specs in `specs` (no torch); implementations in `logits`.

Every sampler is an object with ``select(logits, seen, generator) -> next_ids`` where ``logits``
is (B, V) float32 for the next position, ``seen`` (B, V) bool marks tokens already in each
sequence (prompt + generated) and ``generator`` is a sequence of seeded ``torch.Generator``, one
per row (row i of a batch is seeded with ``seed + i``, so it samples exactly as that prompt does
alone with that seed). Draw with ``zoo.samplers.logits.draw(probs, generator)``.
"""
