"""R's printing of numbers and names (`lmm_jax/r_format.py`), against R 4.2.2's own output."""

from __future__ import annotations

import pytest

from lmm_jax.r_format import abbreviate_unique, format_numbers, r_coefficient_name, zapsmall

# R 4.2.2: format(x, digits = d)
FORMAT_CASES = [
    ([0.00025141, 0.00001047, 0.00000682, 0.00000155], 5,
     ["0.00025141", "0.00001047", "0.00000682", "0.00000155"]),
    ([251.4051, 10.4673, 6.8246, 1.5458], 5, ["251.4051", " 10.4673", "  6.8246", "  1.5458"]),
    ([0.0012345, 123.45], 4, ["1.234e-03", "1.235e+02"]),
    ([0.0001], 4, ["1e-04"]),
    ([612.1, 35.07, 654.94], 4, ["612.10", " 35.07", "654.94"]),
    ([6121002, 35.07], 4, ["6.121e+06", "3.507e+01"]),
    ([0.06292, -1.2], 4, [" 0.06292", "-1.20000"]),
    ([1e-20, 5], 4, ["1e-20", "5e+00"]),
    ([123456789012, 1], 4, ["1.235e+11", "1.000e+00"]),
    ([0, 0], 4, ["0", "0"]),
    ([-1.5, 2.25, 1e5], 4, ["    -1.50", "     2.25", "100000.00"]),
]


@pytest.mark.parametrize("values, digits, expected", FORMAT_CASES)
def test_format_numbers_is_rs_format(values, digits, expected):
    assert format_numbers(values, digits) == expected


def test_zapsmall_rounds_as_r_42():
    """R 4.2's zapsmall rounds to digits - log10(max|x|) decimals, which round() takes to
    the nearest integer: 5 digits of 2.126 keep 5 decimals (ceiling would keep 4)."""
    assert zapsmall([2.12644622057, -0.08228331882], 5).tolist() == [2.12645, -0.08228]
    assert zapsmall([-3.95361, 5.179331], 5).tolist() == [-3.9536, 5.1793]


# R 4.2.2: unname(abbreviate(x, 6)) and abbreviate(x, 11)
NAMES = ["(Intercept)", "recipe[T.B]", "recipe[T.C]", "factor(temperature)[T.185]", "factor(temperature)[T.195]",
         "Days", "Sex[T.Male]", "age:Sex[T.Male]", "I(Days ** 2)", "a b c d e f g h", "log(x + 1)",
         "center(Days)", "scale(Days, ddof=0)"]
SIX = ["(Intr)", "r[T.B]", "r[T.C]", "f()[T.18", "f()[T.19", "Days", "S[T.M]", "a:S[T.", "I(D**2", "abcdefgh",
       "lg(+1)", "cnt(D)", "s(D,d="]
ELEVEN = ["(Intercept)", "recipe[T.B]", "recipe[T.C]", "fc()[T.185]", "fc()[T.195]", "Days", "Sex[T.Male]",
          "ag:Sx[T.Ml]", "I(Days**2)", "abcdefgh", "log(x + 1)", "center(Dys)", "scl(Dy,d=0)"]


def test_abbreviate_is_rs_abbreviate():
    """Spaces do not count and go last; colliding abbreviations are lengthened until distinct."""
    assert abbreviate_unique(NAMES, 6) == SIX
    assert abbreviate_unique(NAMES, 11) == ELEVEN


def test_r_coefficient_names():
    """R 4.2.2's colnames(model.matrix(~ tr * x)), (~ 0 + tr), (~ C(tr, contr.poly)) of
    formulaic's names; abbreviate(R's names, 6) is lme4's correlation headings."""
    formulaic = ["tr[T.drugB]", "tr[T.placebo]", "tr[T.drugB]:x", "tr[drugA]", "C(tr, contr.poly)[.L]", "x"]
    r_names = ["trdrugB", "trplacebo", "trdrugB:x", "trdrugA", "C(tr, contr.poly).L", "x"]
    assert [r_coefficient_name(n) for n in formulaic] == r_names
    assert abbreviate_unique(["(Intercept)", "trdrugB", "trplacebo"], 6) == ["(Intr)", "trdrgB", "trplcb"]
