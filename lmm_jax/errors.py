"""The error raised for input data that cannot be fitted (formula errors: `formula.FormulaError`),
and `plain_message`, a library's error message as relayed in ours."""

import re

_TERMINAL_CODES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class DataError(ValueError):
    """Input data that cannot be fitted; the message names the column, level or term."""


def plain_message(error: BaseException) -> str:
    """`str(error)` without terminal colour codes: formulaic colours the offending part of a
    formula (ESC[1;31m ... ESC[0m), which a pipe or a log file shows as raw bytes."""
    return _TERMINAL_CODES.sub("", str(error))
