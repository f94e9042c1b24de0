"""One way to derive a seed from several parts (base seed, stage, rank, epoch, ...)."""
from __future__ import annotations

import hashlib


def derive_seed(*parts) -> int:
    """A seed in [0, 2**31) from `parts` (ints, strings): a stable hash, the same on every machine and
    Python run (unlike hash()), and unrelated for any two different tuples of parts (unlike sums of
    multiples, where (seed, rank + 1) and (seed + 1, rank) can collide)."""
    text = "/".join(str(part) for part in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") % 2 ** 31
