"""Levels are never merged or split by their labels, coefficient names are unique, and
inputs given as pandas objects are matched by label (issue 36)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lmm_jax
from lmm_jax import DataError
from lmm_jax.formula import RandomTermSpec
from lmm_jax.grouping_factors import grouping_codes, row_keys

# texts that join into one another with ':' ('p:q' + 'r' and 'p' + 'q:r'), separators of
# formulas, spaces, backticks, non-ASCII letters, and numbers held beside text
AWKWARD_NAMES = ["p", "p:q", "q:r", "r", ":", "a/b", "x y", "`", "Süjet", "ß:1", 1, 2.5, "3"]


def _cells(a_names, b_names, rows_per_cell: int, seed: int) -> pd.DataFrame:
    """Every (a, b) cell `rows_per_cell` times, rows shuffled, with a response whose cells
    differ by 4 between b's levels within an a (so that a row given another cell's BLUP is
    far off)."""
    rng = np.random.default_rng(seed)
    a = np.array([x for x in a_names for _ in b_names] * rows_per_cell, dtype=object)
    b = np.array([x for _ in a_names for x in b_names] * rows_per_cell, dtype=object)
    cell_effect = 4.0 * (np.arange(len(a_names) * len(b_names)) % len(b_names))
    y = np.tile(cell_effect, rows_per_cell) + rng.normal(size=len(a))
    order = rng.permutation(len(a))
    return pd.DataFrame({"a": a[order], "b": b[order], "y": y[order]})


@pytest.mark.filterwarnings("ignore:boundary \\(singular\\) fit")
@pytest.mark.parametrize("formula, a_names, b_names, group, colliding", [
    # cells (a, b) = ('p:q', 'r') and ('p', 'q:r'): both 'p:q:r' as text
    ("y ~ 1 + (1 | a:b)", ["p", "p:q", "s"], ["r", "q:r"], "a:b", {"`p:q`:r", "p:`q:r`"}),
    # nested: lme4 writes a/b as (1 | b:a) + (1 | a); (b, a) = ('r', 'p:q') and ('r:p', 'q')
    ("y ~ 1 + (1 | a/b)", ["q", "p:q", "s"], ["r", "r:p"], "b:a", {"r:`p:q`", "`r:p`:q"}),
])
def test_interaction_levels_that_collide_as_text_stay_apart(formula, a_names, b_names, group, colliding):
    """Two cells of one joined text are two levels, labelled so that they differ, and
    predict(data) gives each row its own cell's BLUP: it equals the fitted values (a row
    of one cell got the other's BLUP before, off by up to 2.76)."""
    data = _cells(a_names, b_names, rows_per_cell=8, seed=1)
    result = lmm_jax.fit(formula, data)
    interaction = result.ranef()[group]
    assert len(interaction) == 6 and interaction.index.is_unique
    assert colliding <= set(interaction.index)
    np.testing.assert_allclose(result.predict(data), result.fitted, rtol=0, atol=1e-9)
    modes = interaction.iloc[:, 0]
    assert abs(modes[sorted(colliding)[0]] - modes[sorted(colliding)[1]]) > 2  # a mix-up would show


def test_interaction_labels_are_joined_texts_when_none_collide():
    """Without a collision the labels are R's interaction labels, 'a:b'."""
    frame = pd.DataFrame({"a": ["x", "x", "y", "y"], "b": ["1", "2", "1", "2"]})
    labels, codes, keys = grouping_codes(RandomTermSpec("1", ("a", "b"), "us", "(1 | a:b)"), frame)
    assert labels == ("x:1", "x:2", "y:1", "y:2")
    assert keys == (("x", "1"), ("x", "2"), ("y", "1"), ("y", "2"))
    assert codes.tolist() == [0, 1, 2, 3]


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(st.sampled_from(AWKWARD_NAMES), min_size=2, max_size=40),
       st.lists(st.sampled_from(AWKWARD_NAMES), min_size=2, max_size=40))
def test_levels_are_the_distinct_cells_whatever_their_names(a_values, b_values):
    """Property: the levels of a:b are exactly the distinct (a, b) cells (no two merged by
    their text, none split), labels are unique, and every row's code points at the level
    whose key is the row's own key (predict's lookup)."""
    n = min(len(a_values), len(b_values))
    frame = pd.DataFrame({"a": pd.Series(a_values[:n], dtype=object),
                          "b": pd.Series(b_values[:n], dtype=object)})
    cells = {(str(a), str(b)) for a, b in zip(frame.a, frame.b)}
    if len(cells) < 2:
        return
    labels, codes, keys = grouping_codes(RandomTermSpec("1", ("a", "b"), "us", "(1 | a:b)"), frame)
    assert len(labels) == len(set(labels)) == len(keys) == len(cells)
    assert set(keys) == cells
    assert [keys[c] for c in codes] == row_keys(frame, ("a", "b"))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_predict_on_the_data_equals_fitted_for_awkward_level_names(seed):
    """Property over seeded designs: 3 x 2 cells named from AWKWARD_NAMES (one model shape
    for all seeds), predict(data) equals the fitted values and each factor has its number
    of distinct values as levels."""
    rng = np.random.default_rng(seed)
    names = rng.choice(np.array(AWKWARD_NAMES, dtype=object), size=5, replace=False)
    data = _cells(list(names[:3]), list(names[3:]), rows_per_cell=8, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a singular fit is no concern here
        result = lmm_jax.fit("y ~ 1 + (1 | a/b)", data)
    assert [len(result.ranef()[group]) for group in ("a", "b:a")] == [3, 6]
    np.testing.assert_allclose(result.predict(data), result.fitted, rtol=0, atol=1e-9)


def test_an_object_column_holding_1_and_text_1_is_refused(sleepstudy):
    """The int 1 and the string '1' in one column: R's factor() reads both as '1', pandas
    holds two values; which was meant is unknown, so the column is refused by name."""
    mixed = pd.Series([1 if i % 2 else "1" for i in range(len(sleepstudy))], dtype=object)
    data = sleepstudy.assign(h=mixed.to_numpy(), g=sleepstudy.Subject.astype(object))
    with pytest.raises(DataError, match=r"column 'h' mixes types: the values .*'1' \(str\).* 1 \(int\)"):
        lmm_jax.fit("Reaction ~ Days + (1 | h)", data)
    with pytest.raises(DataError, match="column 'h' mixes types"):
        lmm_jax.fit("Reaction ~ Days + (1 | Subject) + (1 | g:h)", data)
    categories = pd.Categorical(mixed.to_numpy())
    with pytest.raises(DataError, match="column 'h' mixes types"):
        lmm_jax.fit("Reaction ~ Days + (1 | h)", sleepstudy.assign(h=categories))


def test_a_covariate_named_intercept_keeps_its_name(sleepstudy):
    """Only formulaic's intercept term is '(Intercept)'; a column named Intercept is a
    covariate 'Intercept' with the coefficient of the same column under another name, and
    predict reads each coefficient's own column."""
    z = np.random.default_rng(3).normal(size=len(sleepstudy))
    named = lmm_jax.fit("Reaction ~ Days + Intercept + (1 | Subject)", sleepstudy.assign(Intercept=z))
    plain = lmm_jax.fit("Reaction ~ Days + z + (1 | Subject)", sleepstudy.assign(z=z))
    assert list(named.fixef.index) == ["(Intercept)", "Days", "Intercept"]
    np.testing.assert_allclose(named.fixef.to_numpy(), plain.fixef.to_numpy(), rtol=1e-10)
    np.testing.assert_allclose(named.predict(sleepstudy.assign(Intercept=z)), named.fitted, rtol=1e-10)


def test_a_weights_series_is_matched_to_the_rows_by_label(sleepstudy):
    """A weights Series whose index is a reordering of data's is aligned by label (as
    fit_batch aligns a responses DataFrame); an array is matched by position; a Series
    whose labels are not data's is refused."""
    w = pd.Series(np.random.default_rng(4).uniform(1, 2, len(sleepstudy)), index=sleepstudy.index)
    by_position = lmm_jax.fit("Reaction ~ Days + (1 | Subject)", sleepstudy, weights=w.to_numpy())
    shuffled = w.sample(frac=1, random_state=1)
    by_label = lmm_jax.fit("Reaction ~ Days + (1 | Subject)", sleepstudy, weights=shuffled)
    assert by_label.loglik == pytest.approx(by_position.loglik, rel=1e-12)
    with pytest.raises(DataError, match="index of the weights Series is not a reordering of data's index"):
        lmm_jax.fit("Reaction ~ Days + (1 | Subject)", sleepstudy, weights=w.set_axis(w.index + 1000))
