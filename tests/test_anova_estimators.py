"""ANOVA (Henderson I and III) estimators against R's one-way tables, REML and dense algebra."""

import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import lmm_jax
from lmm_jax import Model, datasets

REFERENCE = Path(__file__).parent / "reference"
ONEWAY_TOL = 1e-6  # the tolerance for the anova_oneway cases
COMPONENT_TOL = 1e-4  # README: variance components, relative
METHODS = ("henderson1", "henderson3")


def load_case(name):
    return json.loads((REFERENCE / f"{name}.json").read_text())


def dataset_of(case):
    return datasets.load(Path(case["data"]).stem)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", ["dyestuff_anova", "dyestuff2_anova", "mathachieve_anova_unbalanced"])
def test_oneway_matches_reference(name, method):
    case = load_case(name)
    group, response = case["group"], case["response"]
    est = lmm_jax.anova_estimates(f"{response} ~ 1 + (1 | {group})", dataset_of(case), method=method)
    out = est.to_dict()
    group_row, resid_row = out["table"]
    assert out["method"] == method
    assert [group_row["source"], resid_row["source"]] == [group, "Residual"]
    np.testing.assert_allclose(group_row["ms"], case["msa"], rtol=ONEWAY_TOL)
    np.testing.assert_allclose(resid_row["ms"], case["mse"], rtol=ONEWAY_TOL)
    np.testing.assert_allclose(group_row["expected_ms"][group], case["n0"], rtol=ONEWAY_TOL)
    assert group_row["expected_ms"]["Residual"] == 1.0
    assert abs(resid_row["expected_ms"][group]) < 1e-12
    np.testing.assert_allclose(out["variances"][group], case["sigma2_group"], rtol=ONEWAY_TOL)
    np.testing.assert_allclose(out["variances"]["Residual"], case["sigma2_residual"], rtol=ONEWAY_TOL)
    assert out["negative"] == ([group] if case["sigma2_group"] < 0 else [])


def test_method3_equals_method1_oneway_unbalanced():
    data = datasets.load("mathachieve")
    one = lmm_jax.anova_estimates("MathAch ~ 1 + (1 | School)", data, method="henderson1").to_dict()
    three = lmm_jax.anova_estimates("MathAch ~ 1 + (1 | School)", data, method="henderson3").to_dict()
    for name in ("School", "Residual"):
        np.testing.assert_allclose(three["variances"][name], one["variances"][name], rtol=1e-10)


def test_truncate_sets_negative_to_zero_and_flags_it():
    data = datasets.load("dyestuff2")
    est = lmm_jax.anova_estimates("Yield ~ 1 + (1 | Batch)", data, truncate=True).to_dict()
    assert est["variances"]["Batch"] == 0.0 and est["negative"] == ["Batch"] and est["truncated"]
    case = load_case("dyestuff2_anova")
    np.testing.assert_allclose(est["variances"]["Residual"], case["sigma2_residual"], rtol=ONEWAY_TOL)


@functools.lru_cache
def reml_of_case(name, formula):
    return reml_variances(formula, dataset_of(load_case(name)))


def reml_variances(formula, data):
    model = Model.from_formula(formula, data, "REML")
    params = model.fit_params()
    sigma2 = float(params.sigma2)
    out = {t.name: sigma2 * float(th) ** 2 for t, th in zip(model.design.terms, params.theta)}
    return out | {"Residual": sigma2}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name, formula", [
    ("dyestuff_reml", "Yield ~ 1 + (1 | Batch)"),
    ("pastes_nested_reml", "strength ~ 1 + (1 | batch/cask)"),
])
def test_balanced_equals_reml(name, formula, method):
    """Balanced design, interior REML solution: ANOVA = REML (ours to 1e-6, lme4's to 1e-4)."""
    case = load_case(name)
    data = dataset_of(case)
    anova = lmm_jax.anova_estimates(formula, data, method=method).to_dict()["variances"]
    ours = reml_of_case(name, formula)
    lme4 = {row["group"]: row["vcov"] for row in case["varcorr"]}
    assert set(anova) == set(ours) == set(lme4)
    for group in anova:
        np.testing.assert_allclose(anova[group], ours[group], rtol=1e-6)
        np.testing.assert_allclose(anova[group], lme4[group], rtol=COMPONENT_TOL)


def crossed_data(seed, balanced):
    """Two crossed factors a (6 levels) x b (5 levels), 2 replicates per cell, a covariate x."""
    rng = np.random.default_rng(seed)
    a, b, _ = np.meshgrid(np.arange(6), np.arange(5), np.arange(2), indexing="ij")
    a, b = a.ravel(), b.ravel()
    if not balanced:
        keep = rng.random(a.size) > 0.3
        a, b = a[keep], b[keep]
    x = rng.normal(size=a.size)
    y = 1.0 + 0.5 * x + 2.0 * rng.normal(size=6)[a] + 1.5 * rng.normal(size=5)[b] + rng.normal(size=a.size)
    return pd.DataFrame({"y": y, "x": x, "a": [f"a{i}" for i in a], "b": [f"b{j}" for j in b]})


def test_crossed_balanced_equals_reml():
    data = crossed_data(1, balanced=True)
    formula = "y ~ 1 + (1 | a) + (1 | b)"
    ours = reml_variances(formula, data)
    assert min(ours.values()) > 0.1  # an interior solution
    for method in METHODS:
        anova = lmm_jax.anova_estimates(formula, data, method=method).to_dict()["variances"]
        for group in ours:
            np.testing.assert_allclose(anova[group], ours[group], rtol=1e-6)


def projection(M):
    """Orthogonal projection onto the column space of M (dense, numpy: the test's oracle)."""
    u, s, _ = np.linalg.svd(M, full_matrices=False)
    u = u[:, s > 1e-9 * s[0]]
    return u @ u.T


def indicators(codes):
    return (np.asarray(codes)[:, None] == np.unique(codes)[None, :]).astype(float)


def check_table(table, contrasts, y, Z):
    """Each row's SS = y'Ay, df = tr(A), E(MS) coefficients = tr(Z_j'AZ_j)/df."""
    for row, A in zip(table, contrasts):
        np.testing.assert_allclose(row["ss"], y @ A @ y, rtol=1e-9)
        np.testing.assert_allclose(row["df"], np.trace(A), rtol=1e-9)
        for name, Zj in Z.items():
            np.testing.assert_allclose(row["expected_ms"][name] * row["df"],
                                       np.trace(Zj.T @ A @ Zj), rtol=1e-9, atol=1e-9)


def test_henderson3_crossed_unbalanced_against_dense_projections():
    data = crossed_data(2, balanced=False)
    est = lmm_jax.anova_estimates("y ~ x + (1 | a) + (1 | b)", data, method="henderson3").to_dict()
    X = np.column_stack([np.ones(len(data)), data["x"]])
    Z = {"b": indicators(data["b"]), "a": indicators(data["a"])}  # increasing number of levels
    P0, P1 = projection(X), projection(np.column_stack([X, Z["b"]]))
    P2 = projection(np.column_stack([X, Z["b"], Z["a"]]))
    assert [row["source"] for row in est["table"]] == ["b", "a", "Residual"]
    check_table(est["table"], [P1 - P0, P2 - P1, np.eye(len(data)) - P2], data["y"].to_numpy(), Z)


def test_henderson1_crossed_unbalanced_against_dense_forms():
    data = crossed_data(3, balanced=False)
    est = lmm_jax.anova_estimates("y ~ 1 + (1 | a) + (1 | b)", data, method="henderson1").to_dict()
    n = len(data)
    Z = {"b": indicators(data["b"]), "a": indicators(data["a"])}
    mean, Pb, Pa = np.full((n, n), 1.0 / n), projection(Z["b"]), projection(Z["a"])
    check_table(est["table"], [Pb - mean, Pa - mean, np.eye(n) - Pa - Pb + mean], data["y"].to_numpy(), Z)


@pytest.mark.parametrize("formula, problem", [
    ("Reaction ~ Days + (Days | Subject)", "scalar"),
    ("Reaction ~ Days + (0 + Days | Subject)", "scalar"),
    ("Reaction ~ Days", "no random terms"),
])
def test_rejects_non_scalar_random_terms(formula, problem):
    with pytest.raises(ValueError, match=problem):
        lmm_jax.anova_estimates(formula, datasets.load("sleepstudy"))


def test_henderson1_needs_intercept_only():
    with pytest.raises(ValueError, match="intercept-only"):
        lmm_jax.anova_estimates("Reaction ~ Days + (1 | Subject)", datasets.load("sleepstudy"),
                                method="henderson1")


def test_confounded_term_is_an_error():
    data = datasets.load("dyestuff")
    with pytest.raises(ValueError, match="'Batch'.*no degrees of freedom"):
        lmm_jax.anova_estimates("Yield ~ Batch + (1 | Batch)", data, method="henderson3")


def test_unknown_method():
    with pytest.raises(ValueError, match="henderson1"):
        lmm_jax.anova_estimates("Yield ~ 1 + (1 | Batch)", datasets.load("dyestuff"), method="REML")


@pytest.mark.parametrize("name, formula, method", [
    ("dyestuff", "Yield ~ 1 + (1 | Batch)", "REML"),
    ("pastes", "strength ~ 1 + (1 | batch/cask)", "REML"),
    ("pastes", "strength ~ 1 + (1 | batch/cask)", "ML"),
    ("dyestuff", "Yield ~ 1 + (1 | Batch)", "ML"),
])
def test_anova_start_reaches_the_same_optimum(name, formula, method):
    """θ₀ = √(σ̂²_k/σ̂²_e) from Henderson III reaches the default start's optimum. On these
    balanced designs the ANOVA estimates are the REML estimates, so the REML fits start at the
    optimum (0 iterations); pastes ML needs fewer iterations than from θ₀ = 1. Finding:
    dyestuff ML needs more (7 against 5): the ANOVA start is REML's, and ML's θ̂ is 11% lower."""
    model = Model.from_formula(formula, datasets.load(name), method)
    theta0 = lmm_jax.anova_start(model)
    default, anova = model.fit_params(), model.fit_params(theta0=theta0)
    assert int(default.status) <= 1 and int(anova.status) <= 1
    np.testing.assert_allclose(anova.theta, default.theta, rtol=1e-5)
    assert abs(float(anova.objective) - float(default.objective)) < 1e-8
    if method == "REML":
        assert int(anova.iterations) == 0
    if (name, method) != ("dyestuff", "ML"):
        assert int(anova.iterations) <= int(default.iterations)


def test_anova_start_of_a_singular_model_and_refusals():
    """A negative ANOVA estimate (dyestuff2) starts at MIN_START, not at θ = 0 where the deviance
    is stationary; vector terms and known residual scales are refused."""
    data = datasets.load("dyestuff2")
    model = Model.from_formula("Yield ~ 1 + (1 | Batch)", data)
    np.testing.assert_array_equal(lmm_jax.anova_start(model), [0.1])
    fit = model.fit_params(theta0=lmm_jax.anova_start(model))
    assert float(fit.theta[0]) == 0.0 and bool(fit.singular)
    sleep = datasets.load("sleepstudy")
    with pytest.raises(ValueError, match="not a scalar intercept term"):
        lmm_jax.anova_start(Model.from_formula("Reaction ~ Days + (Days | Subject)", sleep))
    with pytest.raises(ValueError, match="known residual scale"):
        lmm_jax.anova_start(Model.from_formula("Yield ~ 1 + (1 | Batch)", data,
                                               weights=np.ones(len(data)), known_scale=True))


@pytest.mark.parametrize("method", METHODS)
def test_a_response_of_large_mean_gives_the_reference_table(method):
    """The forms y'P_S y came from the raw cross products W'y and y'y: dyestuff's Yield + 1e8
    gave Batch 1762.13 where R's table gives 1764.05 (and one-way residual variances of
    2.6e-16); the sums of squares are now of the least-squares residuals."""
    case = load_case("dyestuff_anova")
    data = dataset_of(case)
    shifted = data.assign(**{case["response"]: data[case["response"]] + 1e8})
    out = lmm_jax.anova_estimates(f"{case['response']} ~ 1 + (1 | {case['group']})", shifted,
                                  method=method).to_dict()
    np.testing.assert_allclose(out["variances"][case["group"]], case["sigma2_group"], rtol=ONEWAY_TOL)
    np.testing.assert_allclose(out["variances"]["Residual"], case["sigma2_residual"], rtol=ONEWAY_TOL)


def test_henderson1_with_an_interaction_term_gives_searles_table():
    """Method I for (1 | batch) + (1 | cask) + (1 | batch:cask) on Pastes less rows 3, 10, 11,
    25 and 40 (unbalanced): Searle's quadratic forms T_a - T_μ, T_b - T_μ,
    T_ab - T_a - T_b + T_μ, T_0 - T_ab, computed in R with dense projections. The crossed
    form T_ab - T_μ for the interaction gave the same estimates but other a:b and Residual
    rows (an audit's data: a Residual SS of -1.92)."""
    data = datasets.load("pastes").drop(index=[2, 9, 10, 24, 39])
    out = lmm_jax.anova_estimates("strength ~ 1 + (1 | batch) + (1 | cask) + (1 | batch:cask)", data,
                                  method="henderson1").to_dict()
    rows = {row["source"]: row for row in out["table"]}
    np.testing.assert_allclose([rows[s]["ss"] for s in ("batch", "cask", "batch:cask", "Residual")],
                               [225.9410303031, 14.4925122432, 326.8598210901, 12.675], rtol=1e-9)
    assert [rows[s]["df"] for s in ("batch", "cask", "batch:cask", "Residual")] == [9, 2, 18, 25]
    np.testing.assert_allclose([out["variances"][s] for s in ("batch", "cask", "batch:cask", "Residual")],
                               [1.105532877441, -0.658995090863, 9.833851969900, 0.507], rtol=1e-9)
