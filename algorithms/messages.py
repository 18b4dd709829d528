"""Wording shared by error messages: counts with the right plural, a few example ids."""

from __future__ import annotations

from typing import Sequence

# How many feature ids an error message lists as examples.
EXAMPLE_IDS = 5


def id_examples(ids: Sequence[int]) -> str:
    """The first few ids, comma-separated ("4, 8, 15, …")."""
    shown = ", ".join(str(fid) for fid in ids[:EXAMPLE_IDS])
    return shown + (", …" if len(ids) > EXAMPLE_IDS else "")


def plural(count: int, word: str) -> str:
    """ "1 polygon" / "3 polygons"."""
    return f"{count} {word}" + ("" if count == 1 else "s")


def features_have(ids: Sequence[int]) -> str:
    """ "1 feature has" / "3 features have"."""
    return plural(len(ids), "feature") + (" has" if len(ids) == 1 else " have")
