"""Bad input gets a clear error (or warning) naming the column, level or formula part."""

from __future__ import annotations

import jax
import numpy as np
import pandas as pd
import pytest

import lmm_jax
from lmm_jax import DataError, FormulaError

FORMULA = "Reaction ~ Days + (Days | Subject)"


def test_missing_column(sleepstudy):
    with pytest.raises(DataError, match=r"column 'Dayz' \(used in fixed part"):
        lmm_jax.fit("Reaction ~ Dayz + (1 | Subject)", sleepstudy)
    with pytest.raises(DataError, match=r"column 'Subj' \(used in random term '\(Days \| Subj\)'\)"):
        lmm_jax.fit("Reaction ~ Days + (Days | Subj)", sleepstudy)


def test_nan_in_response_is_dropped_with_a_warning(sleepstudy):
    data = sleepstudy.copy()
    data.loc[[3, 50, 77], "Reaction"] = np.nan
    before = data.copy()
    with pytest.warns(UserWarning, match=r"dropped 3 of 180 rows with missing values in: Reaction \(3\)"):
        result = lmm_jax.fit(FORMULA, data)
    pd.testing.assert_frame_equal(data, before)  # the caller's frame is untouched
    assert result.nobs == 177
    clean = lmm_jax.fit(FORMULA, sleepstudy.drop(index=[3, 50, 77]))
    np.testing.assert_allclose(result.fixef, clean.fixef, rtol=1e-10)


@pytest.mark.parametrize("weights", [None, "w", "array"])
def test_the_model_owns_its_arrays(sleepstudy, weights):
    """The model's arrays share no memory with the caller's frame (formulaic's numpy output,
    a categorical's codes and a weights column included): a later change to the frame
    changes neither the design nor the fit (which reads the host arrays: `Model.arrays`),
    and the frame is untouched by the fit."""
    data = sleepstudy.assign(t=sleepstudy["Days"] / 10.0, w=1.0 + sleepstudy["Days"] / 9.0,
                             Subject=sleepstudy["Subject"].astype("category"))
    before = data.copy()
    given = data["w"].to_numpy().copy() if weights == "array" else weights  # a writeable array
    model = lmm_jax.Model.from_formula("Reaction ~ 0 + t + (0 + t | Subject)", data, weights=given)
    pd.testing.assert_frame_equal(data, before)
    design = model.design
    columns = [data[name].to_numpy() for name in ("Reaction", "t", "w")] + [data["Subject"].cat.codes.to_numpy()]
    columns += [] if given is None or isinstance(given, str) else [given]
    for array in jax.tree_util.tree_leaves(model.host_arrays):
        assert not any(np.shares_memory(array, column) for column in columns)
    fixef = model.fit().fixef.to_numpy()
    data.loc[0, "Reaction"] = 1e6
    data.loc[0, "t"] = 50.0
    data.loc[0, "w"] = 3.0
    if weights == "array":
        given[:] = 7.0
    assert design.y[0] == before.loc[0, "Reaction"] and design.X[0, 0] == before.loc[0, "t"]
    np.testing.assert_array_equal(model.fit().fixef.to_numpy(), fixef)


@pytest.mark.parametrize("formula", ["Reaction ~ center(Days) + (1 | Subject)", "Reaction ~ C(Days) + (1 | Subject)",
                                     "log(Reaction) ~ Days + (1 | Subject)",
                                     "np.log(Reaction) ~ Days + (np.exp(Days / 10) | Subject)"])
def test_an_unused_column_named_like_a_function_does_not_shadow_it(sleepstudy, formula):
    """formulaic sees only the columns the formula reads: a data column `center`, `C`, `log`
    or `np` that the formula does not use leaves the function (or module) of that name in place."""
    shadowing = sleepstudy.assign(center=1.0, C=1.0, log=1.0, np=1.0)
    np.testing.assert_array_equal(lmm_jax.fit(formula, shadowing).fixef.to_numpy(),
                                  lmm_jax.fit(formula, sleepstudy).fixef.to_numpy())


def test_missing_values_in_several_columns_and_in_the_weights(sleepstudy):
    """Each column's count is named, a row missing in two columns is dropped once, and a
    missing prior weight (array or column) drops its row too."""
    data = sleepstudy.assign(w=1.0, Subject=sleepstudy["Subject"].astype(str))
    data.loc[[3, 50], "Reaction"] = np.nan
    data.loc[[50, 60], "Subject"] = None
    before = data.copy()
    pattern = r"dropped 3 of 180 rows with missing values in: Reaction \(2\), Subject \(2\)"
    with pytest.warns(UserWarning, match=pattern):
        result = lmm_jax.fit(FORMULA, data)
    pd.testing.assert_frame_equal(data, before)
    assert result.nobs == 177
    weights = np.ones(180)
    weights[[3, 99]] = np.nan
    with pytest.warns(UserWarning, match=r"dropped 4 of 180 rows .* Reaction \(2\), Subject \(2\), weights \(2\)"):
        weighted = lmm_jax.fit(FORMULA, data, weights=weights)
    assert weighted.nobs == 176
    data.loc[[3, 99], "w"] = np.nan
    with pytest.warns(UserWarning, match=r"dropped 4 of 180 rows .* weights \(2\)"):
        by_column = lmm_jax.fit(FORMULA, data, weights="w")
    np.testing.assert_allclose(by_column.fixef, weighted.fixef, rtol=1e-12)


def test_one_level_grouping_factor(sleepstudy):
    data = sleepstudy.assign(one="A")
    with pytest.raises(DataError, match=r"grouping factor 'one' in random term '\(1 \| one\)' has only one level \('A'\)"):
        lmm_jax.fit("Reaction ~ Days + (1 | one)", data)


def test_one_level_fixed_factor(sleepstudy):
    data = sleepstudy.assign(site="north")
    with pytest.raises(DataError, match=r"factor 'site' in the fixed part .* has only one level \('north'\)"):
        lmm_jax.fit("Reaction ~ Days + site + (1 | Subject)", data)


@pytest.mark.parametrize("formula, message", [
    ("Reaction ~ Days + (Days | )", r"has no grouping factor"),
    ("Reaction ~ Days + ( | Subject)", r"has nothing before the bar"),
    ("Reaction ~ Days + (Days | Subject", r"unclosed '\('"),
    ("Reaction ~ Days + Days | Subject", r"must be written in parentheses"),
    ("Reaction Days + (1 | Subject)", r"must have the form 'response ~ terms'"),
    ("Reaction ~ Days + + (1 | Subject)", r"empty term"),
    ("Reaction ~ Days + foo(1 | Subject)", r"unknown covariance structure 'foo'"),
    ("Reaction ~ Days + (1 | Sub-ject)", r"grouping factor 'Sub-ject' is not a column name"),
    # formulaic's "Missing operator" in the fixed part, for a random term without its bar
    ("Reaction ~ Days + (Days Subject)", r"'\(Days Subject\)' reads as a random-effect term without its"),
    ("Reaction ~ Days + ar1(1 Subject)", r"without its '\|': write 'ar1\(expr \| group\)'"),
    # formulaic read `offset` as a column: "column 'offset' ... is not in the data"
    ("Reaction ~ Days + offset(2 * Days) + (1 | Subject)",
     r"offset\(\) terms are not supported; .* 'I\(Reaction - \(2 \* Days\)\) ~ \.\.\.'"),
])
def test_malformed_formula(sleepstudy, formula, message):
    with pytest.raises(FormulaError, match=message):
        lmm_jax.fit(formula, sleepstudy)


def test_mixed_model_engine_needs_a_random_term(sleepstudy):
    """`lmm_jax.fit` fits a formula without random terms as the linear model; the mixed-model
    `Model` (and so fit_batch, blups, ...) refuses it by name."""
    with pytest.raises(FormulaError, match=r"has no random terms"):
        lmm_jax.Model.from_formula("Reaction ~ Days", sleepstudy)


def test_no_fixed_effects_is_refused_by_name(sleepstudy):
    """`y ~ 0 + (1 | g)` (lme4 fits it) is refused with the formula named, not failed inside JAX."""
    with pytest.raises(FormulaError, match=r"has no fixed effects"):
        lmm_jax.fit("Reaction ~ 0 + (1 | Subject)", sleepstudy)


def test_rank_deficient_fixed_effects_are_dropped_with_a_warning(sleepstudy):
    data = sleepstudy.assign(Days2=2.0 * sleepstudy["Days"])
    with pytest.warns(UserWarning, match=r"rank deficient so dropping 1 column / coefficient: Days2"):
        result = lmm_jax.fit("Reaction ~ Days + Days2 + (Days | Subject)", data)
    assert list(result.fixef.index) == ["(Intercept)", "Days"]
    reference = lmm_jax.fit(FORMULA, sleepstudy)
    np.testing.assert_allclose(result.fixef, reference.fixef, rtol=1e-8)


def test_bad_method_and_data(sleepstudy):
    with pytest.raises(ValueError, match="method must be 'REML' or 'ML'"):
        lmm_jax.fit(FORMULA, sleepstudy, method="OLS")
    with pytest.raises(DataError, match="data must be a pandas DataFrame or a dict"):
        lmm_jax.fit(FORMULA, [1, 2, 3])


@pytest.mark.parametrize("family", ["binomial", "poisson", None])
def test_a_glmm_family_is_refused_as_out_of_scope(sleepstudy, family):
    """family= was a TypeError about an unexpected keyword; GLMMs are out of scope."""
    refusal = r"family=.*linear mixed models .* \(GLMMs, lme4's glmer\) are not supported"
    with pytest.raises(ValueError, match=refusal):
        lmm_jax.fit(FORMULA, sleepstudy, family=family)


def test_gaussian_family_is_the_linear_mixed_model(sleepstudy):
    gaussian = lmm_jax.fit(FORMULA, sleepstudy, family="gaussian")
    assert gaussian.fixef.equals(lmm_jax.fit(FORMULA, sleepstudy).fixef)


def test_infinite_response(sleepstudy):
    data = sleepstudy.copy()
    data.loc[0, "Reaction"] = np.inf
    with pytest.raises(DataError, match=r"response 'Reaction' has non-finite values"):
        lmm_jax.fit(FORMULA, data)


def test_as_many_levels_as_rows(sleepstudy):
    data = sleepstudy.assign(obs=np.arange(len(sleepstudy)))
    with pytest.raises(DataError, match=r"grouping factor 'obs' .* has 180 levels for 180 observations"):
        lmm_jax.fit("Reaction ~ Days + (1 | obs)", data)


def test_dict_input_matches_frame(sleepstudy):
    as_dict = {column: sleepstudy[column].to_numpy() for column in sleepstudy}
    np.testing.assert_allclose(lmm_jax.fit(FORMULA, as_dict).fixef, lmm_jax.fit(FORMULA, sleepstudy).fixef)
