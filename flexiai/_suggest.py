"""Suggestions ("did you mean ...?"): the one way flexiai guesses what a misspelt name
meant, for model fields (``SyncConfig(enabeld=True)``), literal values (``kind="opnai"``)
and ``FLEXIAI_*`` environment variables alike, so the three never drift apart."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["did_you_mean"]

#: Longer words are not typos of a setting's name, and difflib's cost grows with length.
_LONGEST_WORD = 200


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """``" (did you mean X?)"`` for the candidate closest to ``word``, or ``""`` when none
    is close. Case is ignored (``Enabled`` suggests ``enabled``)."""
    if not word or len(word) > _LONGEST_WORD:
        return ""
    import difflib  # only on the error path: nothing on the cold start pays for it

    by_lower = {name.lower(): name for name in candidates}
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    return f" (did you mean {by_lower[close[0]]}?)" if close else ""
