"""Factors keep only the levels their rows use, as lmer's model.frame(drop.unused.levels = TRUE).

A declared but unused level (a pandas Categorical's unused category, a `C(x, levels=[...])`
value absent from the data) gave an all-zero column: in the fixed part a coefficient dropped
as rank-deficient whose level `predict` silently coded as the reference level (lme4
refuses), in a random term a covariance parameter of no data (6 θ where lme4 fits 3)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import lmm_jax
drop_unused_categories = None

# lme4 1.1-31, with bin = factor(ifelse(Days < 5, "a", "b"), levels = c("a", "b", "c")):
# lmer(Reaction ~ bin + Days + (1 | Subject), sleepstudy): fixef, theta, REMLcrit
FIXED_FIXEF = [252.46935166666555, 5.85335749999933, 9.58041361111124]
FIXED_THETA = [1.19544236469622]
FIXED_REML = 1779.75907945545
# lmer(Reaction ~ Days + (0 + bin | Subject), sleepstudy): theta, REMLcrit, fixef
RANDOM_THETA = [1.08033565480690, 1.54371368405209, 1.14195609228120]
RANDOM_REML = 1749.70351364072
RANDOM_FIXEF = [250.9904809385845, 10.0422121673388]


def _with_bin(sleepstudy, categories=("a", "b", "c")):
    values = np.where(sleepstudy["Days"] < 5, "a", "b")
    return sleepstudy.assign(bin=pd.Categorical(values, categories=list(categories)),
                             text=values)


def _fit_without_warnings(formula, data):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no rank-deficiency warning: the level is gone, as in R
        return lmm_jax.fit(formula, data)


@pytest.mark.parametrize("formula", [
    "Reaction ~ bin + Days + (1 | Subject)",
    "Reaction ~ C(text, levels=['a', 'b', 'c']) + Days + (1 | Subject)",
    "Reaction ~ C(bin, levels=['c', 'a', 'b']) + Days + (1 | Subject)",
])
def test_an_unused_fixed_level_is_no_coefficient_and_predict_refuses_it(sleepstudy, formula):
    data = _with_bin(sleepstudy)
    result = _fit_without_warnings(formula, data)
    assert len(result.fixef) == 3 and not result.design.dropped_columns
    np.testing.assert_allclose(result.fixef.to_numpy(), FIXED_FIXEF, rtol=1e-6)
    np.testing.assert_allclose(result.theta, FIXED_THETA, rtol=1e-5)
    assert result.objective == pytest.approx(FIXED_REML, abs=1e-6)
    np.testing.assert_allclose(result.predict(data), result.fitted, rtol=1e-12)
    new = data.head(2).assign(bin=pd.Categorical(["c", "a"], categories=["a", "b", "c"]), text=["c", "a"])
    with pytest.raises(lmm_jax.DataError, match=r"has value\(s\) \['c'\] that are not levels .*\['a', 'b'\]"):
        result.predict(new)


def test_an_unused_level_inside_a_random_term_has_no_parameters(sleepstudy):
    data = _with_bin(sleepstudy)
    result = _fit_without_warnings("Reaction ~ Days + (0 + bin | Subject)", data)
    np.testing.assert_allclose(result.theta, RANDOM_THETA, rtol=1e-4)
    assert result.objective == pytest.approx(RANDOM_REML, abs=1e-6)
    np.testing.assert_allclose(result.fixef.to_numpy(), RANDOM_FIXEF, rtol=1e-6)
    assert list(result.ranef()["Subject"].columns) == ["bin[a]", "bin[b]"]
    new = data.head(2).assign(bin=pd.Categorical(["c", "a"], categories=["a", "b", "c"]))
    with pytest.raises(lmm_jax.DataError, match=r"'bin'.* in the random term '\(0 \+ bin \| Subject\)'"):
        result.predict(new)


def test_a_level_left_only_on_dropped_rows_is_dropped_too(sleepstudy):
    """R drops unused levels after removing rows with missing values."""
    data = _with_bin(sleepstudy, categories=("a", "b", "late"))
    data["bin"] = data["bin"].where(data["Days"] < 8, "late")
    data.loc[data["Days"] >= 8, "Reaction"] = np.nan
    with pytest.warns(UserWarning, match="dropped 36 of 180 rows"):
        result = lmm_jax.fit("Reaction ~ bin + Days + (1 | Subject)", data)
    assert list(result.fixef.index) == ["(Intercept)", "bin[T.b]", "Days"]
    with pytest.raises(lmm_jax.DataError, match=r"\['late'\]"):
        result.predict(data.tail(1).assign(Reaction=0.0))


def test_used_categories_keep_their_declared_order_and_the_callers_frame(sleepstudy):
    data = _with_bin(sleepstudy, categories=("c", "b", "a"))
    before = data.copy()
    trimmed = drop_unused_categories(data)
    assert list(trimmed["bin"].cat.categories) == ["b", "a"]
    pd.testing.assert_frame_equal(data, before)
    assert drop_unused_categories(sleepstudy) is sleepstudy  # nothing to drop: no copy


def test_predict_on_no_rows_is_an_empty_prediction(sleepstudy):
    result = lmm_jax.fit("Reaction ~ Days + (Days | Subject)", sleepstudy)
    for random_effects in (True, False):
        out = result.predict(sleepstudy.head(0), random_effects=random_effects)
        assert out.shape == (0,)
