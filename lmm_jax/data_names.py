"""The name `summary()` prints on its `Data:` line, as lme4 prints its data argument's expression.

In order: the `data_name=` given; the one variable (an identifier not starting with `_`:
not IPython's output history, nor pytest's temporaries) that the first caller
outside lmm_jax binds to this very object (as lme4's `deparse(substitute(data))` of a variable:
`fit(f, d)` prints `Data: d`); the frame's `attrs["name"]`, which `datasets.load` sets and
pandas carries on to frames derived from it. None (no `Data:` line) where none is known.
"""

from __future__ import annotations

import sys


def data_name_of(data, given: str | None) -> str | None:
    """The data's name by the rules above."""
    if given is not None:
        return given
    return _caller_variable(data) or _attrs_name(data)


def _caller_variable(data) -> str | None:
    """The one public name bound to `data` itself in the first frame outside lmm_jax."""
    frame = sys._getframe(1)
    try:
        while frame is not None and frame.f_globals.get("__name__", "").partition(".")[0] == "lmm_jax":
            frame = frame.f_back
        if frame is None:
            return None
        names = [name for name, value in frame.f_locals.items()
                 if value is data and name.isidentifier() and not name.startswith("_")]
        return names[0] if len(names) == 1 else None
    finally:
        del frame  # a frame held in a local is a reference cycle


def _attrs_name(data) -> str | None:
    attrs = getattr(data, "attrs", None)
    name = attrs.get("name") if isinstance(attrs, dict) else None
    return name if isinstance(name, str) and name else None
