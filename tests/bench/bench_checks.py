"""Checks on a benchmark report's shape and sanity, never on its speed (imported by the bench
tests; the module name is unique in the tree).

A report puts each figure beside its target and says whether it met it. The tests check that the
figures are real numbers and that each verdict agrees with its figure and target, whatever the
machine's speed made of the figure: not the targets' values, nor the figures against them.
"""

from __future__ import annotations

import math

SLACK = 0.01  # relative: a figure this close to its target may be rounded to either side


def finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def positive(value: object) -> bool:
    return finite(value) and value > 0  # type: ignore[operator]


def verdict_agrees(met: object, figure: float, target: float, *, at_most: bool) -> bool:
    """``met`` says what ``figure`` against ``target`` says (``at_most``: the figure must not
    exceed the target; else it must reach it). Within rounding of the target either is right."""
    if not isinstance(met, bool):
        return False
    if abs(figure - target) <= SLACK * max(abs(target), 1.0):
        return True
    return met == (figure <= target if at_most else figure >= target)
