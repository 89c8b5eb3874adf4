"""How prepared pairs split into train, validation and test, and the fewest pairs recall can be measured on: pure
arithmetic, shared by the tuning data code and the Tune page (which says the number before anything is prepared)."""

from __future__ import annotations

DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)
MIN_HELD_OUT = 2  # recall ranks each held-out pair among the others: a held-out split needs at least two


def split_counts(n: int, fractions: tuple[float, ...]) -> list[int]:
    """Largest-remainder counts summing to n; every split with a positive fraction gets one when n allows."""
    raw = [n * f for f in fractions]
    counts = [int(r) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: raw[i] - counts[i], reverse=True)[: n - sum(counts)]:
        counts[i] += 1
    for i, f in enumerate(fractions):
        if f > 0 and counts[i] == 0 and n >= sum(1 for g in fractions if g > 0):
            j = max(range(len(counts)), key=lambda j: counts[j])
            counts[j] -= 1
            counts[i] += 1
    return counts


def min_pairs(fractions: tuple[float, float, float] = DEFAULT_FRACTIONS) -> int:
    """The fewest pairs whose split gives each held-out split with a share (val, test) `MIN_HELD_OUT` pairs."""
    held = [i for i in (1, 2) if fractions[i] > 0]
    n = 1
    while held and n < 100_000 and any(split_counts(n, tuple(fractions))[i] < MIN_HELD_OUT for i in held):
        n += 1
    return n
