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
from lmm_jax.factor_levels import as_factors

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
    trimmed = as_factors(data)
    assert list(trimmed["bin"].cat.categories) == ["b", "a"]
    pd.testing.assert_frame_equal(data, before)
    assert as_factors(sleepstudy) is sleepstudy  # nothing to drop: no copy


def test_predict_on_no_rows_is_an_empty_prediction(sleepstudy):
    result = lmm_jax.fit("Reaction ~ Days + (Days | Subject)", sleepstudy)
    for random_effects in (True, False):
        out = result.predict(sleepstudy.head(0), random_effects=random_effects)
        assert out.shape == (0,)


# lme4 1.1-31 on sleepstudy with late = Days >= 5 (an R logical, a factor to lme4):
# lmer(Reaction ~ 0 + late + Days + (1 | Subject)): fixef (lateFALSE, lateTRUE, Days), REMLcrit
LOGICAL_FIXEF = [252.4693516666668, 258.3227091666668, 9.5804136111111]
LOGICAL_REML = 1779.75907945545
# lmer(Reaction ~ Days + (0 + late | Subject)): the bin model above, late = bin
LOGICAL_RANDOM_THETA = RANDOM_THETA


def test_a_boolean_column_is_a_factor_as_rs_logicals(sleepstudy):
    """formulaic coded a bool as one 0/1 column: `0 + late` had no intercept and one column
    where lme4 has lateFALSE and lateTRUE, and (0 + late | Subject) one θ where lme4 has 3."""
    data = sleepstudy.assign(late=sleepstudy["Days"] >= 5)
    fixed = _fit_without_warnings("Reaction ~ 0 + late + Days + (1 | Subject)", data)
    assert list(fixed.fixef.index) == ["late[False]", "late[True]", "Days"]
    np.testing.assert_allclose(fixed.fixef.to_numpy(), LOGICAL_FIXEF, rtol=1e-6)
    assert fixed.objective == pytest.approx(LOGICAL_REML, abs=1e-6)
    random = _fit_without_warnings("Reaction ~ Days + (0 + late | Subject)", data)
    np.testing.assert_allclose(random.theta, LOGICAL_RANDOM_THETA, rtol=1e-4)
    np.testing.assert_allclose(random.predict(data), random.fitted, rtol=1e-12)
    assert data["late"].dtype == bool  # the caller's column is untouched


# lme4 1.1-31: lmer(distance ~ age + Sex + (1 | Subject), Orthodont): fixef, REMLcrit, and
# predict() of rows 1, 20 and 70
ORTHODONT_FIXEF = [15.38569023569052, 0.66018518518517, 2.32102272727260]
ORTHODONT_REML = 437.512507828005
ORTHODONT_PREDICT = [25.3923720230844, 25.2474719886531, 22.2920548758479]


def test_pandas_string_columns_are_text_factors():
    """The nullable "string" dtype: formulaic failed converting 'Male' to a float, and for
    digit texts took the values as one numeric column ('3' -> 3.0), in fit and predict."""
    data = lmm_jax.datasets.load("orthodont")
    as_string = data.assign(Sex=data["Sex"].astype("string"), Subject=data["Subject"].astype("string"))
    result = _fit_without_warnings("distance ~ age + Sex + (1 | Subject)", as_string)
    np.testing.assert_allclose(result.fixef.to_numpy(), ORTHODONT_FIXEF, rtol=1e-6)
    assert result.objective == pytest.approx(ORTHODONT_REML, abs=1e-6)
    rows = as_string.iloc[[0, 19, 69]]
    np.testing.assert_allclose(result.predict(rows), ORTHODONT_PREDICT, rtol=1e-6)
    digits = data.assign(age_text=data["age"].astype(str))
    by_text = _fit_without_warnings("distance ~ age_text + (1 | Subject)", digits)
    by_string = _fit_without_warnings("distance ~ age_text + (1 | Subject)",
                                      digits.assign(age_text=digits["age_text"].astype("string")))
    assert list(by_string.fixef.index) == list(by_text.fixef.index) and len(by_text.fixef) == 4
    np.testing.assert_allclose(by_string.fixef.to_numpy(), by_text.fixef.to_numpy(), rtol=1e-12)
    text_rows = digits.iloc[[0, 1, 2]]
    np.testing.assert_allclose(by_text.predict(text_rows.assign(age_text=text_rows["age_text"].astype("string"))),
                               by_text.predict(text_rows), rtol=1e-12)


def test_factor_is_rs_name_for_a_categorical_column(sleepstudy):
    """factor(x) read as a column named 'factor' ("not in the data"); it is formulaic's C(x)."""
    by_factor = _fit_without_warnings("Reaction ~ factor(Days) + (1 | Subject)", sleepstudy)
    by_c = _fit_without_warnings("Reaction ~ C(Days) + (1 | Subject)", sleepstudy)
    np.testing.assert_allclose(by_factor.fixef.to_numpy(), by_c.fixef.to_numpy(), rtol=1e-12)
    assert len(by_factor.fixef) == 10
    with pytest.raises(lmm_jax.DataError, match=r"column 'Days' has value\(s\) \['10'\]"):
        by_factor.predict(sleepstudy.head(1).assign(Days=10))


# lme4 1.1-31 on sleepstudy: lmer(Reaction ~ Days + I(Days^2) + (Days | Subject)): fixef,
# REMLcrit; lmer(Reaction ~ Days + (0 + I(Days^2) | Subject)): theta, REMLcrit
POWER_FIXEF = [255.449372777778251, 7.434085012625610, 0.337022327441125]
POWER_REML = 1742.8155996966
POWER_RANDOM_THETA = [0.0281293853244573]
POWER_RANDOM_REML = 1800.19002233453


@pytest.mark.parametrize("days", ["int", "float"])
def test_a_caret_inside_a_call_is_a_power_as_in_r(sleepstudy, days):
    """Python's ^ is XOR: I(Days^2) was Days XOR 2 for an integer column (REML criterion
    1739.35, another model) and an error for a float one."""
    data = sleepstudy.assign(Days=sleepstudy["Days"].astype(days))
    result = _fit_without_warnings("Reaction ~ Days + I(Days^2) + (Days | Subject)", data)
    np.testing.assert_allclose(result.fixef.to_numpy(), POWER_FIXEF, rtol=1e-6)
    assert result.objective == pytest.approx(POWER_REML, abs=1e-6)
    random = _fit_without_warnings("Reaction ~ Days + (0 + I(Days^2) | Subject)", data)
    np.testing.assert_allclose(random.theta, POWER_RANDOM_THETA, rtol=1e-4)
    assert random.objective == pytest.approx(POWER_RANDOM_REML, abs=1e-6)


@pytest.mark.parametrize("text, expected", [
    ("I(x^2) + (a + b)^2", "I(x**2) + (a + b)^2"),
    ("I((x + 1)^2) + log(x^3) + {x^2}", "I((x + 1)**2) + log(x**3) + {x**2}"),
    ("C(x, levels=['a^b']) + `a^b` + x:(a + b)^2", "C(x, levels=['a^b']) + `a^b` + x:(a + b)^2"),
])
def test_python_powers_rewrites_only_inside_python(text, expected):
    from lmm_jax.formula import python_powers

    assert python_powers(text) == expected
