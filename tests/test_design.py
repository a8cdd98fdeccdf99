"""The design's model matrices: formulaic materialises the fixed part and every random term's
expression in one structured call; the result must equal the part-by-part calls, and a part
that formulaic cannot build is still named in the error."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import lmm_jax
from lmm_jax import FormulaError, design


def _part_by_part(parsed, frame):
    return None, [None] * len(parsed.random)


@pytest.mark.parametrize("formula", [
    "Reaction ~ Days + (Days | Subject)",
    "Reaction ~ center(Days) + I(Days ** 2) + (1 | Subject) + (0 + Days | Subject)",
    "Reaction ~ C(week) * Days + (C(week) | Subject)",
    "Reaction ~ C(week) + I(Days ** 2) + (0 + C(week) | Subject) + (0 + center(Days) | Subject)",
])
def test_one_structured_call_equals_the_part_by_part_calls(sleepstudy, formula, monkeypatch):
    data = sleepstudy.assign(week=np.where(sleepstudy["Days"] < 5, "first", "second"))
    together = design.build_design(formula, data)
    monkeypatch.setattr(design, "_model_matrices", _part_by_part)
    apart = design.build_design(formula, data)
    assert together.fixed_names == apart.fixed_names
    np.testing.assert_array_equal(together.X, apart.X)
    np.testing.assert_array_equal(together.y, apart.y)
    # the specs rebuild the same matrices on new rows (prediction): rows of one level of
    # `week` and a few days, so levels or a centring learnt from them would differ
    new_rows = data[(data["week"] == "second") & (data["Days"] > 6)]
    _assert_same_matrix(together.fixed_spec, apart.fixed_spec, new_rows)
    assert len(together.terms) == len(apart.terms) == formula.count("|")
    for a, b in zip(together.terms, apart.terms):
        assert (a.name, a.column_names, a.levels) == (b.name, b.column_names, b.levels)
        np.testing.assert_array_equal(a.values, b.values)
        np.testing.assert_array_equal(a.codes, b.codes)
        _assert_same_matrix(a.model_spec, b.model_spec, new_rows)


def _assert_same_matrix(spec, reference_spec, rows):
    matrix, reference = spec.get_model_matrix(rows), reference_spec.get_model_matrix(rows)
    assert list(matrix.columns) == list(reference.columns)
    np.testing.assert_array_equal(np.asarray(matrix, dtype=float), np.asarray(reference, dtype=float))


def test_the_structured_call_keeps_each_parts_intercept(sleepstudy):
    """A part given to formulaic as text inside a structured formula loses its default
    intercept; the parts are given parsed, so (Days | g) has two columns and y ~ Days two."""
    built = design.build_design("Reaction ~ Days + (Days | Subject) + (1 | Subject)", sleepstudy)
    assert built.fixed_names == ("(Intercept)", "Days")
    assert sorted(t.column_names for t in built.terms) == [("(Intercept)",), ("(Intercept)", "Days")]


@pytest.mark.parametrize("formula, message", [
    ("Reaction ~ Days + (np.log(Days - 5) | Subject)",
     r"cannot build the model matrix of 'np.log\(Days - 5\)' in random term '\(np.log\(Days - 5\) \| Subject\)'"),
    ("Reaction ~ np.log(Days - 5) + (1 | Subject)",
     r"cannot build the fixed-effects model matrix of 'Reaction ~ np.log\(Days - 5\)'"),
])
def test_a_part_formulaic_cannot_build_is_named(sleepstudy, formula, message):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy's log of negative values
        with pytest.raises(FormulaError, match=message):
            lmm_jax.fit(formula, sleepstudy)

