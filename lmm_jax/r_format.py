"""R's printing of numbers, so that summaries show the digits lme4's show.

`format_numbers(values, digits)` is R's `format(x, digits = digits)` of a numeric vector
(its C routine `formatReal`): one common layout for all entries, fixed notation with as
many decimals as the entry that needs most to show `digits` significant digits, unless
scientific notation is narrower (`1.047e-05`). `zapsmall` and `round_half_even` are R's
`zapsmall` and `round`. `abbreviate_unique(names, minlength)` is R's `abbreviate()`,
which lengthens the abbreviations of names that would collide until all are distinct;
`r_coefficient_name` turns formulaic's coefficient names into R's.
"""

from __future__ import annotations

import math
import re

import numpy as np


def _significant(value: float, digits: int) -> tuple[int, int]:
    """(decimal exponent, significant digits needed) of |value| shown to `digits` digits."""
    if value == 0 or not math.isfinite(value):
        return 0, 1
    mantissa, exponent = f"{abs(value):.{digits - 1}e}".split("e")
    return int(exponent), max(1, len(mantissa.replace(".", "").rstrip("0")))


def format_numbers(values, digits: int) -> list[str]:
    """R's `format(values, digits = digits)`: strings of one width, right-aligned."""
    values = [float(v) for v in np.ravel(values)]
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return _aligned(["NaN" if math.isnan(v) else ("Inf" if v > 0 else "-Inf") for v in values])
    parts = [_significant(v, digits) for v in finite]
    negative = any(v < 0 for v in finite)
    left = max((v < 0) + (exponent + 1 if exponent >= 0 else 1) for v, (exponent, _) in zip(finite, parts))
    right = max(max(0, sig - exponent - 1) for exponent, sig in parts)
    fixed_width = left + right + (right > 0)
    mantissa_digits = max(sig for _, sig in parts) - 1
    exponent_digits = 2 if max(abs(exponent) for exponent, _ in parts) >= 100 else 1
    scientific_width = negative + (mantissa_digits > 0) + mantissa_digits + 4 + exponent_digits
    if fixed_width <= scientific_width:
        texts = [f"{v:.{right}f}" if math.isfinite(v) else _special(v) for v in values]
    else:
        texts = [f"{v:.{mantissa_digits}e}" if math.isfinite(v) else _special(v) for v in values]
    return _aligned([_no_negative_zero(t) for t in texts])


def _special(value: float) -> str:
    return "NaN" if math.isnan(value) else ("Inf" if value > 0 else "-Inf")


def _no_negative_zero(text: str) -> str:
    """R prints a value that rounds to zero without a sign."""
    zero = not any(c in "123456789" for c in text.split("e")[0])
    return text[1:] if text.startswith("-") and zero else text


def _aligned(texts: list[str]) -> list[str]:
    width = max(len(t) for t in texts)
    return [t.rjust(width) for t in texts]


def round_half_even(values, decimals: int) -> np.ndarray:
    """R's `round(x, decimals)` (IEC 60559: halves to even, as numpy's)."""
    return np.round(np.asarray(values, dtype=float), decimals) + 0.0  # + 0.0: no negative zeros


def zapsmall(values, digits: int) -> np.ndarray:
    """R's (4.2) `zapsmall(x, digits)`: `round(x, digits - log10(max|x|))`, whose fractional
    number of decimals R's `round` takes to the nearest integer (2.126 at 5 digits: 5)."""
    values = np.asarray(values, dtype=float)
    largest = np.max(np.abs(values[np.isfinite(values)]), initial=0.0)
    decimals = max(0, math.floor(digits - math.log10(largest) + 0.5)) if largest > 0 else digits
    return round_half_even(values, decimals)


def abbreviate(name: str, length: int) -> str:
    """R's `abbreviate(name, length)` of one name (its C routine `stripchars`): spaces do not
    count towards the length; from the right, drop lower-case vowels, then lower-case
    letters, then any character, never the first of a word; spaces go last if the result is
    still too long ('(Intercept)' -> '(Intr)', 'I(Days ** 2)' -> 'I(D**2')."""
    chars = list(name.strip())
    passes = (lambda c: c in "aeiou", lambda c: "a" <= c <= "z", lambda c: c != " ")
    for removable in passes:
        i = len(chars) - 1
        while len(chars) - chars.count(" ") > length and i > 0:
            if removable(chars[i]) and chars[i] != " " and chars[i - 1] != " ":  # not a word's first
                del chars[i]
            i -= 1
    if len(chars) > length:
        chars = chars[:1] + [c for c in chars[1:] if c != " "]
    return "".join(chars)


def abbreviate_unique(names, minlength: int) -> list[str]:
    """R's `abbreviate(names, minlength)`: where abbreviations collide, those names are
    abbreviated again one character longer, until all are distinct."""
    names = list(names)
    out = [abbreviate(name, minlength) for name in names]
    length = minlength
    while len(set(out)) < len(out) and length < max(len(n) for n in names):
        length += 1
        clashing = {a for a in out if out.count(a) > 1}
        out = [abbreviate(name, length) if a in clashing else a for name, a in zip(names, out)]
    return out


def r_coefficient_name(name: str) -> str:
    """R's name of a coefficient formulaic names: a factor's level glued to the factor's
    name, `Diet[T.D2]:Time` -> `DietD2:Time` (and `x[L]` -> `xL`, `[.L]` -> `.L`)."""
    return re.sub(r"\[(?:T\.)?([^\[\]]*)\]", r"\1", name)
