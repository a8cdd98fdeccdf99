"""Exact JAX gradients of the profiled criteria against finite differences; optimum checks;
predictions for new data."""

from __future__ import annotations

import jax
import numpy as np
import pandas as pd
import pytest

import lmm_jax

FORMULAS = {
    "sleepstudy": "Reaction ~ Days + (Days | Subject)",
    "pastes": "strength ~ 1 + (1 | batch/cask)",
}


@pytest.mark.parametrize("data_name", list(FORMULAS))
@pytest.mark.parametrize("method", ["REML", "ML"])
def test_gradient_matches_central_differences(data_name, method):
    model = lmm_jax.Model.from_formula(FORMULAS[data_name], lmm_jax.datasets.load(data_name), method)
    deviance = jax.jit(model.deviance)
    gradient = jax.jit(jax.grad(model.deviance))
    rng = np.random.default_rng(3)
    for _ in range(3):
        theta = rng.uniform(0.2, 1.5, size=model.shape.n_theta)
        step = 1e-5
        numeric = [(deviance(theta + step * e) - deviance(theta - step * e)) / (2 * step)
                   for e in np.eye(len(theta))]
        np.testing.assert_allclose(gradient(theta), numeric, rtol=1e-6, atol=1e-6)


def test_optimum_is_stationary_with_positive_definite_hessian(sleepstudy):
    model = lmm_jax.Model.from_formula(FORMULAS["sleepstudy"], sleepstudy)
    params = model.fit_params()
    assert float(params.gradient_norm) < 1e-5
    hessian = jax.jit(jax.hessian(model.deviance))(params.theta)
    assert np.all(np.linalg.eigvalsh(hessian) > 0)
    assert float(model.deviance(params.theta)) == pytest.approx(float(params.objective), abs=1e-9)


def test_predict_reproduces_fitted_values_and_handles_new_levels(sleepstudy):
    result = lmm_jax.fit(FORMULAS["sleepstudy"], sleepstudy)
    np.testing.assert_allclose(result.predict(sleepstudy), result.fitted, rtol=1e-10)
    np.testing.assert_allclose(result.fitted + result.residuals, sleepstudy["Reaction"], rtol=1e-12)
    new = pd.DataFrame({"Days": [0.0, 5.0, 5.0], "Subject": [308, 308, 999]})
    predicted = result.predict(new)
    population = result.fixef["(Intercept)"] + result.fixef["Days"] * new["Days"].to_numpy()
    modes = result.ranef()["Subject"].loc["308"]
    expected_308 = population[1] + modes["(Intercept)"] + 5.0 * modes["Days"]
    np.testing.assert_allclose(predicted, [population[0] + modes["(Intercept)"], expected_308, population[2]],
                               rtol=1e-10)
    np.testing.assert_allclose(result.predict(new, random_effects=False), population, rtol=1e-12)


@pytest.mark.parametrize("as_group, first_label", [
    (lambda subject: subject.astype(float).astype("category"), "308"),
    (lambda subject: (subject + 0.5).astype("category"), "308.5"),
    (lambda subject: subject + 0.1, "308.1"),
], ids=["whole-float categories", "fractional-float categories", "fractional floats"])
def test_predict_finds_the_levels_of_float_grouping_columns(sleepstudy, as_group, first_label):
    """A row's level is found by its label: the fit's labels of float categories once read
    '308.0' where the rows' read '308', so predict silently used the population level for
    every row (118 ms off on sleepstudy). Now both give the same fitted values and BLUPs as
    the integer column."""
    formula = FORMULAS["sleepstudy"]
    data = sleepstudy.assign(Subject=as_group(sleepstudy["Subject"]))
    result, reference = lmm_jax.fit(formula, data), lmm_jax.fit(formula, sleepstudy)
    np.testing.assert_allclose(result.predict(data), reference.predict(sleepstudy), rtol=1e-10)
    np.testing.assert_allclose(result.predict(data), result.fitted, rtol=1e-10)
    np.testing.assert_allclose(result.ranef()["Subject"].to_numpy(), reference.ranef()["Subject"].to_numpy(),
                               rtol=1e-8, atol=1e-10)
    assert result.ranef()["Subject"].index[0] == first_label


def test_predict_refuses_categorical_values_the_fit_did_not_have(sleepstudy):
    """formulaic codes such values as the reference level (a silently wrong prediction);
    lme4 stops on a new level of a fixed-effect factor. Known levels still predict."""
    data = sleepstudy.assign(arm=np.where(sleepstudy["Subject"].astype(int) % 2 == 0, "a", "b"))
    result = lmm_jax.fit("Reaction ~ arm + Days + (1 | Subject)", data)
    known = data.head(3).assign(arm=["a", "b", "b"])
    expected = result.fixef["(Intercept)"] + result.fixef["Days"] * known["Days"].to_numpy() \
        + result.fixef["arm[T.b]"] * np.array([0.0, 1.0, 1.0])
    np.testing.assert_allclose(result.predict(known, random_effects=False), expected, rtol=1e-12)
    with pytest.raises(lmm_jax.DataError, match=r"column 'arm' has value\(s\) \['c'\]"):
        result.predict(known.assign(arm=["a", "b", "c"]))
    with pytest.warns(UserWarning, match="outside the levels"):
        given = lmm_jax.fit("Reaction ~ C(Days, levels=[1, 2]) + (1 | Subject)", data)
    inside = data.head(3).assign(Days=[1, 2, 2])
    b0, b2 = given.fixef.to_numpy()  # the intercept (Days 1) and the Days-2 contrast
    np.testing.assert_allclose(given.predict(inside, random_effects=False), [b0, b0 + b2, b0 + b2], rtol=1e-12)
    with pytest.raises(lmm_jax.DataError, match=r"column 'Days' has value\(s\) \['0'\]"):
        given.predict(data.head(3).assign(Days=[0, 1, 2]))


def test_predict_gives_nan_where_a_covariate_is_missing(sleepstudy):
    """lme4 1.1-31 (predict.merMod, na.action = na.pass) on Days = (1, NA, 3, 4), Subject =
    ("308", "308", NA, "999"): 273.3299, NA, 282.8070, 293.2742, and with re.form = NA
    261.8724, NA, 282.8070, 293.2742; formulaic's "contains null values" error before (an
    audit). A missing grouping value is an unseen level: the population prediction."""
    result = lmm_jax.fit("Reaction ~ Days + (Days | Subject)", sleepstudy)
    newdata = pd.DataFrame({"Days": [1, np.nan, 3, 4], "Subject": ["308", "308", None, "999"]})
    np.testing.assert_allclose(result.predict(newdata), [273.3299, np.nan, 282.8070, 293.2742], atol=1e-4)
    np.testing.assert_allclose(result.predict(newdata, random_effects=False),
                               [261.8724, np.nan, 282.8070, 293.2742], atol=1e-4)
    assert np.isnan(result.predict(newdata.iloc[[1]])).all()
