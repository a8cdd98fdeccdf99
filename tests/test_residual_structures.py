"""Residual (R-side) structures: nlme's correlation= and weights=, against nlme and the dense oracle."""

from __future__ import annotations

import json
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from conftest import case_data, load_case

import lmm_jax
from lmm_jax.cli import main
from lmm_jax.residual_evaluator import dense_r0
from lmm_jax.residual_model import RESIDUAL_EVALUATORS, ResidualModel, residual_deviance_function


def small_data() -> pd.DataFrame:
    """12 groups of 5 rows with times t, locations (sx, sy), a covariate z > 0, a 3-level
    factor h and responses with CAR(1), exponential-with-nugget and power-variance errors.
    (Written to CSV for the Rscript checks pinned below.)"""
    rng = np.random.default_rng(20261125)
    n_g, size = 12, 5
    g = np.repeat(np.arange(n_g), size)
    t = np.round(np.sort(rng.uniform(0, 6, n_g * size).reshape(n_g, size), axis=1).ravel(), 2)
    sx, sy = np.round(rng.uniform(0, 3, n_g * size), 2), np.round(rng.uniform(0, 3, n_g * size), 2)
    x = np.round(rng.normal(size=n_g * size), 3)
    z = np.round(rng.uniform(0.5, 3, n_g * size), 3)

    def correlated(cor):
        blocks = [np.linalg.cholesky(cor(slice(k * size, (k + 1) * size))) @ rng.normal(size=size)
                  for k in range(n_g)]
        return np.concatenate(blocks)

    car = correlated(lambda r: 0.6 ** np.abs(t[r, None] - t[None, r]))
    dist = lambda r: np.hypot(sx[r, None] - sx[None, r], sy[r, None] - sy[None, r])  # noqa: E731
    spatial = correlated(lambda r: 0.3 * np.eye(size) + 0.7 * np.exp(-dist(r) / 1.5))
    u = np.repeat(rng.normal(size=n_g), size)
    return pd.DataFrame(dict(
        g=[f"g{k:02d}" for k in g], t=t, sx=sx, sy=sy, x=x, z=z,
        y_car=np.round(1 + 0.5 * x + 2 * car, 3),
        y_exp=np.round(1 + 0.5 * x + 2 * spatial, 3),
        y_pow=np.round(1 + 0.5 * x + u + rng.normal(size=n_g * size) * z ** 0.8, 3),
        h=np.array(["a", "b", "c"])[np.arange(n_g * size) % 3]))


SMALL = small_data()
RAGGED = SMALL.drop(index=[1, 7, 8, 20, 33, 34, 35, 59])  # unequal group sizes: padding is exercised

# (formula, correlation, variance): every structure, alone and with a random intercept
STRUCTURES = {
    "ar1": ("y_car ~ x", "ar1(~ 1 | g)", None),
    "car1": ("y_car ~ x", "car1(~ t | g)", None),
    "cs": ("y_car ~ x", "cs(~ 1 | g)", None),
    "un": ("y_car ~ x", "un(~ 1 | g)", None),
    "exp": ("y_exp ~ x", "exp(~ sx + sy | g)", None),
    "exp_nugget": ("y_exp ~ x", "exp(~ sx + sy | g, nugget=True)", None),
    "ident": ("y_pow ~ x", None, "ident(~ 1 | h)"),
    "power": ("y_pow ~ x", None, "power(~ z)"),
    "lme_ar1_power": ("y_pow ~ x + (1 | g)", "ar1(~ 1 | g)", "power(~ z)"),
    "lme_un_ident": ("y_pow ~ x + (x | g)", "un(~ 1 | g)", "ident(~ 1 | h)"),
}


def small_model(name: str, method: str = "REML", data=RAGGED) -> ResidualModel:
    formula, correlation, variance = STRUCTURES[name]
    return ResidualModel.from_formula(formula, data, method, correlation=correlation, variance=variance)


def off_start(model: ResidualModel) -> jnp.ndarray:
    """A parameter vector away from the start (all entries non-trivial)."""
    x0 = np.asarray(model.initial_theta())
    return jnp.asarray(x0 + 0.3 * np.cos(np.arange(len(x0)) + 1.0))


# ----- the same checks for every structure ---------------------------------------------
@partial(jax.jit, static_argnames=("shape", "evaluator"))
def _profile(x, arrays, res, shape, evaluator):
    return RESIDUAL_EVALUATORS[evaluator](x, arrays, res, shape)


@partial(jax.jit, static_argnames=("shape",))
def _deviance_gradient_and_differences(x, arrays, res, shape, h):
    """∇ of the REML criterion at x, and its central differences (lax.map: no batched LAPACK)."""
    deviance = residual_deviance_function(arrays, res, shape)
    steps = h * jnp.eye(x.shape[0])
    values = jax.lax.map(deviance, jnp.concatenate([x + steps, x - steps]))
    return jax.grad(deviance)(x), (values[:x.shape[0]] - values[x.shape[0]:]) / (2 * h)


@pytest.mark.parametrize("name, method", [(name, "REML") for name in STRUCTURES]
                         + [("cs", "ML"), ("lme_un_ident", "ML")])
def test_blocked_equals_dense(name, method):
    model = small_model(name, method)
    x = off_start(model)
    args = (x, model.arrays, model.residual_arrays, model.residual_shape)
    fast, dense = _profile(*args, "blocked"), _profile(*args, "dense")
    for got, want in zip(fast, dense):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name", list(STRUCTURES))
def test_correlation_is_a_valid_block_and_pytree_round_trips_under_jit(name):
    model = small_model(name)
    x = off_start(model)
    res, shape = model.residual_arrays, model.residual_shape
    leaves, treedef = jax.tree_util.tree_flatten(res)
    rebuilt = jax.jit(lambda ls: jax.tree_util.tree_unflatten(treedef, ls))(leaves)
    for a, b in zip(jax.tree_util.tree_leaves(rebuilt), leaves):
        np.testing.assert_array_equal(a, b)
    hash(shape)  # static argument of jit
    r0 = np.asarray(jax.jit(dense_r0, static_argnums=3)(x, model.arrays, res, shape))
    np.testing.assert_allclose(r0, r0.T, atol=1e-14)
    assert np.linalg.eigvalsh(r0).min() > 0
    cor = r0 / np.sqrt(np.outer(np.diag(r0), np.diag(r0)))
    np.testing.assert_allclose(np.diag(cor), 1.0)
    groups = RAGGED["g"].to_numpy()
    if shape.correlation.n_params:  # zero across groups, non-zero within
        assert np.all(cor[groups[:, None] != groups[None, :]] == 0)
        assert np.any(np.abs(cor[(groups[:, None] == groups[None, :]) & ~np.eye(len(groups), dtype=bool)]) > 1e-3)


QUICK_GRADIENTS = ("ar1", "cs", "ident", "lme_ar1_power")  # the others compile longer: slow


@pytest.mark.parametrize("name", [n if n in QUICK_GRADIENTS else pytest.param(n, marks=pytest.mark.slow)
                                  for n in STRUCTURES])
def test_gradient_matches_finite_differences(name):
    model = small_model(name)
    x = off_start(model)
    grad, numeric = _deviance_gradient_and_differences(x, model.arrays, model.residual_arrays,
                                                        model.residual_shape, 1e-5)
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-6)


def _simulate(model: ResidualModel, x_true: np.ndarray, beta: np.ndarray, sigma: float, seed: int):
    """y = Xβ + e with Var(e) = σ² V₀(x_true) (dense, fine for a simulation)."""
    from lmm_jax.dense import dense_z_lambda

    shape = model.residual_shape
    v0 = np.asarray(dense_r0(jnp.asarray(x_true), model.arrays, model.residual_arrays, shape))
    if shape.model.n_levels:
        zl = np.asarray(dense_z_lambda(jnp.asarray(x_true[:shape.model.n_theta]), model.arrays, shape.model))
        v0 = v0 + zl @ zl.T
    noise = np.linalg.cholesky(v0) @ np.random.default_rng(seed).normal(size=v0.shape[0])
    return np.asarray(model.arrays.X) @ beta + sigma * noise


def _many_groups(n_groups: int = 600) -> pd.DataFrame:
    frame = pd.concat([SMALL.assign(g=SMALL["g"] + f"_{k}", sx=SMALL["sx"] + 0.1 * k)
                       for k in range(n_groups // 12)], ignore_index=True)
    return frame


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ar1", "car1", "cs", "un", "exp_nugget", "ident", "power", "lme_ar1_power"])
def test_simulation_recovers_parameters(name):
    formula, correlation, variance = STRUCTURES[name]
    model = ResidualModel.from_formula(formula, _many_groups(), correlation=correlation, variance=variance)
    x_true = np.asarray(off_start(model))
    y = _simulate(model, x_true, np.array([1.0, 0.5]), 2.0, seed=7)
    fitted = jax.device_get(model.fit_params(y=jnp.asarray(y)))
    shape = model.residual_shape
    _, cor_true, var_true = shape.split(jnp.asarray(x_true))
    _, cor_hat, var_hat = shape.split(jnp.concatenate([fitted.theta, fitted.residual]))
    assert int(fitted.status) <= 1
    # statistical tolerances at 600 groups of 5: 4 to 10 standard errors for β (the intercept's
    # SE is 0.05 to 0.12 here), about 3 for a correlation (SE about 0.04)
    np.testing.assert_allclose(fitted.beta[0], 1.0, atol=0.5)
    np.testing.assert_allclose(fitted.beta[1], 0.5, atol=0.1)
    np.testing.assert_allclose(np.sqrt(fitted.sigma2), 2.0, rtol=0.1)
    np.testing.assert_allclose(shape.correlation.natural(cor_hat), shape.correlation.natural(cor_true),
                               rtol=0.1, atol=0.12)
    np.testing.assert_allclose(shape.variance.natural(var_hat), shape.variance.natural(var_true),
                               rtol=0.1, atol=0.05)


def test_positions_from_a_covariate():
    """ar1 over integer positions k (= row order here) equals ar1 over the row order, and
    differs once positions have a gap; un over the rank of a covariate equals un over row order."""
    data = RAGGED.assign(k=RAGGED.groupby("g").cumcount(), gap=RAGGED.groupby("g").cumcount() ** 2)

    def deviance(formula, correlation):
        model = ResidualModel.from_formula(formula, data, correlation=correlation)
        return float(model.deviance(off_start(model)))

    by_order = deviance("y_car ~ x", "ar1(~ 1 | g)")
    assert deviance("y_car ~ x", "ar1(~ k | g)") == pytest.approx(by_order, rel=1e-12)
    assert abs(deviance("y_car ~ x", "ar1(~ gap | g)") - by_order) > 1e-3
    assert deviance("y_car ~ x", "un(~ gap | g)") == pytest.approx(deviance("y_car ~ x", "un(~ 1 | g)"),
                                                                   rel=1e-12)


# ----- nlme's reference cases -----------------------------------------------------------
REFERENCE_CALLS = {  # the cases' `call` fields, in lmm_jax's strings
    "orthodont_gls_cs_reml": ("distance ~ age * Sex", "cs(~ 1 | Subject)", None),
    "orthodont_gls_un_varident_reml": ("distance ~ age * Sex", "un(~ 1 | Subject)", "ident(~ 1 | age)"),
    "bodyweight_lme_ar1_reml": ("weight ~ Time * Diet + (1 | Rat)", "ar1(~ 1 | Rat)", None),
}


def _fit_reference(case_id: str):
    case = load_case(case_id)
    formula, correlation, variance = REFERENCE_CALLS[case_id]
    return case, lmm_jax.fit(formula, case_data(case), method=case["method"], correlation=correlation,
                             weights=variance)


def _assert_matches_nlme(result, case):
    np.testing.assert_allclose(result.fixef, case["fixed"]["estimate"], rtol=1e-4)
    np.testing.assert_allclose(result.se, case["fixed"]["se"], rtol=1e-4)
    np.testing.assert_allclose(result.sigma, case["sigma"], rtol=1e-4)
    np.testing.assert_allclose(result.correlation_parameters, case["correlation_parameters"], rtol=1e-4)
    if case["variance_function"] is None:
        assert result.variance_function is None
    else:
        assert list(result.variance_function) == list(case["variance_function"])
        np.testing.assert_allclose(list(result.variance_function.values()),
                                   list(case["variance_function"].values()), rtol=1e-4)
    for key in ("loglik", "aic", "bic"):
        np.testing.assert_allclose(getattr(result, key), case[key], atol=1e-4)


def test_orthodont_gls_compound_symmetry_matches_nlme():
    case, result = _fit_reference("orthodont_gls_cs_reml")
    _assert_matches_nlme(result, case)
    assert result.ranef() == {} and case["random_sd"] is None
    out = result.to_dict()
    assert json.loads(json.dumps(out))["correlation_parameters"] == result.correlation_parameters
    assert out["variance_function"] is None


@pytest.mark.slow
def test_orthodont_gls_unstructured_varident_matches_nlme():
    case, result = _fit_reference("orthodont_gls_un_varident_reml")
    _assert_matches_nlme(result, case)
    assert result.to_dict()["variance_function"] == result.variance_function


@pytest.mark.slow
def test_bodyweight_lme_ar1_matches_nlme():
    """nlme stops at a random-intercept SD of 0.157 (σ = 37.7); the likelihood is flat there:
    ours goes to the boundary (0, a singular fit) with a log-likelihood 1e-7 *higher*, and
    our likelihood at nlme's own estimates is nlme's logLik."""
    case, result = _fit_reference("bodyweight_lme_ar1_reml")
    _assert_matches_nlme(result, case)
    sd = result.varcorr().sdcor[0]
    assert sd <= case["random_sd"][0] and result.loglik >= case["loglik"] - 1e-8
    model = result.model
    at_nlme = [case["random_sd"][0] / case["sigma"], np.arctanh(case["correlation_parameters"][0])]
    np.testing.assert_allclose(-0.5 * model.deviance(at_nlme), case["loglik"], atol=1e-6)


# ----- Rscript + nlme 3.1-162 on small_data() (numbers pinned) ---------------------------
R_CHECKS = {
    # gls(y_car ~ x, d, correlation = corCAR1(form = ~ t | g))
    "car1": (("y_car ~ x", "car1(~ t | g)", None, "REML"),
             [0.5961183137, 0.4917662877], [0.3617799301, 0.0919464353], 1.7922605868, -101.1640828686,
             [0.5763023494], None),
    # gls(y_exp ~ x, d, correlation = corExp(c(1, 0.5), form = ~ sx + sy | g, nugget = TRUE));
    # from nlme's default start it stops at a worse optimum (range 0.0156, logLik -121.4346)
    "exp_nugget": (("y_exp ~ x", "exp(~ sx + sy | g, nugget=True)", None, "REML"),
                   [1.3396146505, 0.3844095609], [0.2672080439, 0.2166414672], 1.8322736288,
                   -121.1132746516, [1.1321140952, 0.7778053065], None),
    # gls(y_pow ~ x, d, weights = varPower(form = ~ z))
    "power": (("y_pow ~ x", None, "power(~ z)", "REML"),
              [0.9825323339, 0.6906213089], [0.2094159249, 0.1944574227], 1.3436162382, -123.8175135185,
              None, {"power": 0.7638756189}),
    # lme(y_pow ~ x, d, random = ~ 1 | g, weights = varPower(form = ~ z)); random SD 0.9424643
    "lme_power": (("y_pow ~ x + (1 | g)", None, "power(~ z)", "REML"),
                  [0.9285646638, 0.5817317170], [0.3234170232, 0.1602227105], 1.0155927453,
                  -119.6871066510, None, {"power": 0.9491800200}),
    # lme(y_car ~ x, d, random = ~ 1 | g, correlation = corCAR1(form = ~ t | g), method = "ML");
    # nlme's random-intercept SD 9.9e-5 is the boundary: ours is exactly 0 (singular)
    "lme_car1_ml": (("y_car ~ x + (1 | g)", "car1(~ t | g)", None, "ML"),
                    [0.5960520639, 0.4925342691], [0.3500644997, 0.0910813882], 1.7478144311,
                    -99.5772646123, [0.5652342693], None),
}


@pytest.mark.parametrize("name", [n if n in ("power",) else pytest.param(n, marks=pytest.mark.slow)
                                  for n in R_CHECKS])
def test_matches_rscript_nlme(name):
    (formula, correlation, variance, method), beta, se, sigma, loglik, cor, var = R_CHECKS[name]
    result = lmm_jax.fit(formula, SMALL, method=method, correlation=correlation, weights=variance)
    np.testing.assert_allclose(result.fixef, beta, rtol=1e-5)
    np.testing.assert_allclose(result.se, se, rtol=1e-5)
    np.testing.assert_allclose(result.sigma, sigma, rtol=1e-5)
    np.testing.assert_allclose(result.loglik, loglik, atol=1e-6)
    if cor is not None:
        np.testing.assert_allclose(result.correlation_parameters, cor, rtol=1e-4)
    if var is not None:
        np.testing.assert_allclose(result.variance_function["power"], var["power"], rtol=1e-5)
    if name == "lme_car1_ml":
        assert result.singular and result.varcorr().sdcor[0] < 1e-4
    if name == "lme_power":
        np.testing.assert_allclose(result.varcorr().sdcor[0], 0.9424643, rtol=1e-5)


# ----- input checks and the command line --------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    (dict(correlation="ar2(~ 1 | g)"), "is not one of"),
    (dict(correlation="ar1(~ t | g)"), "must hold integers"),
    (dict(correlation="cs(~ 1 | nope)"), "'nope'"),
    (dict(correlation="exp(~ sx | g, nuget=True)"), "unknown option"),
    (dict(weights="power(~ zero)"), "has zeros"),
    (dict(weights="ident(~ 1 | g, x=1)"), "unknown option"),
    # nlme: "cannot have zero distances in corSpatial"; without a nugget the fit was all NaN
    (dict(correlation="exp(~ sx_twice + sy_twice | g)"), "same location"),
    (dict(correlation="exp(~ sx_twice + sy_twice | g, nugget=True)"), "same location"),
])
def test_bad_structures_are_clear_errors(kwargs, message):
    data = SMALL.assign(zero=0.0)
    data = data.assign(sx_twice=np.where(data.index == 1, data["sx"].iloc[0], data["sx"]),
                       sy_twice=np.where(data.index == 1, data["sy"].iloc[0], data["sy"]))
    assert data["g"].iloc[0] == data["g"].iloc[1]  # rows 0 and 1 share a group and now a location
    with pytest.raises(ValueError, match=message):
        lmm_jax.fit("y_car ~ x", data, **kwargs)


def test_correlation_groups_must_nest_in_random_effect_groups():
    with pytest.raises(lmm_jax.DataError, match="not nested"):
        lmm_jax.fit("y_car ~ x + (1 | h)", SMALL, correlation="ar1(~ 1 | g)")


def test_no_random_terms_and_no_structure_is_the_linear_model():
    """Neither random terms nor a residual structure: ordinary least squares, fitted by REML
    (σ̂² = RSS/(n - p), β̂ the OLS estimate)."""
    X = np.column_stack([np.ones(len(SMALL)), SMALL["x"]])
    beta, rss = np.linalg.lstsq(X, SMALL["y_car"], rcond=None)[:2]
    result = lmm_jax.fit("y_car ~ x", SMALL)
    np.testing.assert_allclose(result.fixef.to_numpy(), beta, rtol=1e-10)
    np.testing.assert_allclose(result.sigma ** 2, rss[0] / (len(SMALL) - 2), rtol=1e-10)


def test_user_data_untouched_and_cli(tmp_path, capsys):
    before = SMALL.copy()
    path = tmp_path / "small.csv"
    SMALL.to_csv(path, index=False)
    code = main(["fit", str(path), "y_pow ~ x", "--weights", "power(~ z)", "--json", "--no-cache"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    np.testing.assert_allclose(out["variance_function"]["power"], 0.7638756189, rtol=1e-5)
    assert out["correlation_parameters"] is None
    pd.testing.assert_frame_equal(SMALL, before)


def test_gls_by_ml_reports_nlmes_standard_errors():
    """nlme's gls scales Var(β̂) by (N - REML·p)/(N - p), so an ML fit reports
    σ̂² (X'V₀⁻¹X)⁻¹ N/(N - p); σ̂²_ML alone gave SEs √(176/170) too small. nlme 3.1-162:
    gls(weight ~ Time * Diet, BodyWeight, method = "ML", correlation = corAR1(form = ~ 1 | Rat))."""
    data = lmm_jax.datasets.load("bodyweight")
    result = lmm_jax.fit("weight ~ Time * Diet", data, method="ML", correlation="ar1(~ 1 | Rat)")
    np.testing.assert_allclose(result.se, [12.2298476938519, 0.0913156854571, 21.1827175745806,
                                           21.1827175745806, 0.1581634067396, 0.1581634067396], rtol=1e-5)
    np.testing.assert_allclose(result.loglik, -575.336963182, atol=1e-6)


def test_an_index_with_repeated_labels_selects_each_row_once():
    """The structures' rows were taken by label: with labels repeated, every row of a label
    (352 rows for 176) and a broadcasting error inside the fit."""
    data = lmm_jax.datasets.load("bodyweight")
    repeated = pd.concat([data[data["Diet"] == "D1"].reset_index(drop=True),
                          data[data["Diet"] != "D1"].reset_index(drop=True)])
    assert repeated.index.duplicated().any()
    for kwargs in (dict(), dict(correlation="ar1(~ 1 | Rat)"), dict(weights="ident(~ 1 | Diet)")):
        formula = "weight ~ Time * Diet" + (" + (1 | Rat)" if "weights" in kwargs else "")
        plain = lmm_jax.fit(formula, repeated.reset_index(drop=True), **kwargs)
        result = lmm_jax.fit(formula, repeated, **kwargs)
        assert result.nobs == 176
        np.testing.assert_allclose(result.loglik, plain.loglik, rtol=1e-12)


# nlme 3.1-162: gls(distance ~ age, Orthodont, weights = varIdent(form = ~ 1 | Sex));
# coef(f$modelStruct$varStruct, unconstrained = FALSE); f$sigma; logLik(f); the same on
# Orthodont[order(Orthodont$Sex == "Male"), ] (Female rows first)
ORTHODONT_VARIDENT = {"Male": (2.48782371661, "Female", 1.04852723979),
                      "Female": (2.60855093484, "Male", 0.953718665515)}


def test_varident_reference_level_is_the_first_in_data_order_as_nlme():
    """nlme's varIdent takes its strata in order of appearance, the first as the reference:
    the sorted levels made Female the reference on Orthodont (Male rows first), so sigma and
    the ratio differed from nlme's (2.609 and 0.954 against 2.488 and 1.049)."""
    data = lmm_jax.datasets.load("orthodont")
    for first, (sigma, other, ratio) in ORTHODONT_VARIDENT.items():
        frame = data.sort_values("Sex", key=lambda s: s != first, kind="stable")
        result = lmm_jax.fit("distance ~ age", frame, weights="ident(~ 1 | Sex)")
        assert list(result.variance_function) == [first, other]
        np.testing.assert_allclose(result.sigma, sigma, rtol=1e-6)
        np.testing.assert_allclose(result.variance_function[other], ratio, rtol=1e-6)
        np.testing.assert_allclose(result.loglik, -254.551091018, rtol=1e-9)


# nlme 3.1-162, REML: lme(weight ~ Time * Diet, random = ~ 1 | Rat, BodyWeight,
# correlation = corAR1(form = ~ 1)) (the same with form = ~ 1 | Rat), control maxIter = 200;
# lme(distance ~ age, random = ~ 1 | Subject, Orthodont, correlation = corCompSymm(form = ~ 1))
# and corAR1(form = ~ 1): logLik
def test_a_correlation_without_groups_inherits_the_random_terms_grouping_as_lme():
    """`ar1(~ 1)` beside (1 | Rat) was refused (its one group not nested in Rat); nlme's lme
    gives it the innermost random grouping factor."""
    bodyweight = lmm_jax.datasets.load("bodyweight")
    result = lmm_jax.fit("weight ~ Time * Diet + (1 | Rat)", bodyweight, correlation="ar1(~ 1)")
    np.testing.assert_allclose(result.loglik, -568.123877196, rtol=1e-9)
    np.testing.assert_allclose(result.correlation_parameters, [0.989574598339], rtol=1e-7)
    orthodont = lmm_jax.datasets.load("orthodont")
    for correlation, loglik in (("cs(~ 1)", -223.501257798), ("ar1(~ 1)", -223.462752855)):
        result = lmm_jax.fit("distance ~ age + (1 | Subject)", orthodont, correlation=correlation)
        np.testing.assert_allclose(result.loglik, loglik, rtol=1e-9)


def test_methods_written_for_the_plain_model_refuse_residual_structures():
    """anova()/test() (F 24.46 where (β̂/SE)² and nlme's marginal anova give 33.02 on an
    audit's data), variance_components(), fisher_information() and robust_vcov() used the
    model without its residual structures, silently; profile and bootstrap intervals, rlrt
    and structure_parameter_se crashed deep inside. All refuse by name now; Wald intervals
    of β (from the fit's own vcov) stay."""
    from scipy.stats import norm

    data = lmm_jax.datasets.load("bodyweight")
    result = lmm_jax.fit("weight ~ Time * Diet + (1 | Rat)", data, correlation="car1(~ Time | Rat)")
    calls = {"anova": result.anova, "test": lambda: result.test({"Time": 1.0}),
             "variance_components": result.variance_components, "fisher_information": result.fisher_information,
             "robust_vcov": result.robust_vcov, "profile": result.confint,
             "bootstrap": lambda: result.confint(method="bootstrap", nsim=5),
             "rlrt": lambda: lmm_jax.rlrt(result), "se": lambda: lmm_jax.structure_parameter_se(result),
             "influence": result.influence}
    for name, call in calls.items():
        with pytest.raises(NotImplementedError, match="with residual structures"):
            call()
    wald = result.confint(method="wald")
    z = norm.ppf(0.975)
    np.testing.assert_allclose(wald.loc[result.fixef.index, "lower"], result.fixef - z * result.se, rtol=1e-12)


# nlme 3.1-162 on the bundled orthodont.csv (read.csv(stringsAsFactors = TRUE)):
# lme(distance ~ age, random = ~ 1 | Subject, weights = varIdent(form = ~ 1 | Sex)) and
# gls(distance ~ age, correlation = corSymm(form = ~ occ | Subject), weights = varIdent(~ 1 | Sex)),
# occ = (age - 8) / 2 + 1: m$sigma, coef(varStruct, unconstrained = FALSE), logLik
ORTHODONT_GROUPED_VARIDENT = {
    "lme": ("distance ~ age + (1 | Subject)", None, 0.799687985119, 2.20571145118, -214.906978413),
    "gls_un": ("distance ~ age", "un(~ occ | Subject)", 1.87834731475, 1.80939234858, -214.310729715),
}


@pytest.mark.parametrize("name", list(ORTHODONT_GROUPED_VARIDENT))
def test_varident_reference_level_follows_nlmes_grouped_row_order(name):
    """lme sorts the rows by its grouping factors before varIdent takes its strata, and gls
    by the correlation's groups: the reference is the level of the first row in that order
    (subject F01: Female), not of the data's first row (Male), so sigma was 1.764 against
    nlme's 0.800 in the lme fit (found by an audit)."""
    formula, correlation, sigma, male_ratio, loglik = ORTHODONT_GROUPED_VARIDENT[name]
    data = lmm_jax.datasets.load("orthodont")
    data = data.assign(occ=((data["age"] - 8) // 2 + 1).astype(int))
    result = lmm_jax.fit(formula, data, correlation=correlation, weights="ident(~ 1 | Sex)")
    assert list(result.variance_function) == ["Female", "Male"]
    np.testing.assert_allclose(result.sigma, sigma, rtol=1e-5)
    np.testing.assert_allclose(result.variance_function["Male"], male_ratio, rtol=1e-5)
    np.testing.assert_allclose(result.loglik, loglik, rtol=1e-9)
