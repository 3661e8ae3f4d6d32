"""One exception type for problems a user can fix.

A `YingsheError` carries the problem and the fix separately, so the CLI can print both without a
traceback while library callers still get an ordinary exception to catch.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterable
from types import ModuleType


class YingsheError(Exception):
    """A problem with the user's input, named together with how to fix it."""

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(problem if fix is None else f"{problem}\n  fix: {fix}")


def close_matches(word: str, choices: Iterable[str], n: int = 3) -> str:
    """`did you mean ...?` text for an unknown name, or a list of the choices when none is close."""
    choices = sorted(choices)
    near = difflib.get_close_matches(word, choices, n=n, cutoff=0.5)
    if near:
        return "did you mean " + " or ".join(repr(c) for c in near) + "?"
    return "choose one of: " + ", ".join(choices)


def require(module: str, extra: str, purpose: str | None = None) -> ModuleType:
    """Import the optional `module`, or raise a YingsheError naming the extra that installs it,
    instead of a ModuleNotFoundError traceback; `purpose` says what needed it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.partition(".")[0]
        raise YingsheError(
            f"{purpose or top} needs the {top} package, which is not installed",
            f"pip install 'yingshe[{extra}]'",
        ) from err
