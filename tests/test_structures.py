"""Covariance structures of random terms: every structure through the same checks.

For each structure (lme4's unstructured factor, diag, cs, homcs, ar1, toep, a structure
written as a plain function and one written as a subclass): blocked == dense evaluator at
random θ with the term first and second in the blocked order, its Σ/σ² equals its formula,
it is a hashable static argument of jit, the deviance gradient equals central finite
differences, and (slow) a simulation with known parameters is recovered within 4 standard
errors from the exact Hessian. Then nlme's pdCompSymm on the Pastes data, identities
between structures, and the errors for terms a structure cannot take.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import lmm_jax
from lmm_jax.custom_structures import make_structure
from lmm_jax.model import deviance_function


def exponential_correlation(params, dim):
    """Σ/σ² = s² exp(-|i - j| / exp(l)): a user-written structure (θ = (s, l))."""
    lag = jnp.abs(jnp.arange(dim)[:, None] - jnp.arange(dim)[None, :])
    return params[0] ** 2 * jnp.exp(-lag / jnp.exp(params[1]))


@dataclass(frozen=True)
class EqualSlopes(lmm_jax.CovarianceStructure):
    """A user subclass: Λ = diag(s, s, ..., s) ⊙ lower-triangular ones scaled by c: Σ/σ² = s² T T',
    T_ij = 1 (j = 0), c (0 < j <= i); θ = (s, c). (A random-walk-like covariance.)"""

    keyword: ClassVar[str] = "walk"

    @property
    def n_params(self) -> int:
        return 2

    def relative_factor(self, params):
        i, j = np.tril_indices(self.dim)
        t = jnp.zeros((self.dim, self.dim)).at[i, j].set(jnp.where(j == 0, 1.0, params[1]))
        return params[0] * t

    def initial_params(self):
        return np.array([1.0, 0.5])


lmm_jax.register_structure("expcorr", lmm_jax.structure_from_function(
    exponential_correlation, n_params=2, names=("sd_ratio", "log_range"), initial=(1.0, 0.0),
    scale_parameters=(0,), label="expcorr"))
lmm_jax.register_structure("walk", EqualSlopes)

STRUCTURES = {  # keyword: (term expression, θ used in the simulation)
    "us": ("1 + x", [1.0, 0.3, 0.6]),
    "diag": ("0 + f", [0.8, 1.2, 1.0]),
    "cs": ("0 + f", [0.8, 1.2, 1.0, 0.7]),
    "homcs": ("0 + f", [1.0, 0.9]),
    "ar1": ("0 + f", [1.0, 0.8]),
    "toep": ("0 + f", [0.8, 1.2, 1.0, 0.6, -0.4]),
    "expcorr": ("0 + f", [1.0, 0.3]),
    "walk": ("0 + f", [1.0, 0.6]),
}


def random_frame(seed: int, n_groups: int, n_crossed: int, replicates: int = 2) -> pd.DataFrame:
    """Every group g sees every level of the 3-level factor f `replicates` times; h is crossed."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_groups), 3 * replicates)
    f = np.tile(np.repeat(["a", "b", "c"], replicates), n_groups)
    return pd.DataFrame({"y": rng.normal(size=g.size) * 2 + 5, "x": rng.normal(size=g.size),
                         "f": f, "g": [f"g{k:03d}" for k in g],
                         "h": rng.integers(0, n_crossed, size=g.size).astype(str)})


def model_of(keyword: str, frame: pd.DataFrame, method: str = "REML") -> lmm_jax.Model:
    expr = STRUCTURES[keyword][0]
    return lmm_jax.Model.from_formula(f"y ~ x + {keyword}({expr} | g) + (1 | h)", frame, method)


@pytest.fixture(scope="module")
def frames():
    # term first in the blocked order (g: 12 levels > h: 4) and second (h: 40 levels)
    return {"first": random_frame(0, 12, 4), "second": random_frame(1, 12, 40)}


@pytest.mark.parametrize("keyword", list(STRUCTURES))
@pytest.mark.parametrize("position", ["first", "second"])
def test_blocked_equals_dense(keyword, position, frames):
    model = model_of(keyword, frames[position])
    structured = [t.name for t in model.design.terms].index("g")
    assert structured == (0 if position == "first" else 1)
    blocked = jax.jit(deviance_function(model.arrays, model.shape, "blocked"))  # one compile, not one per op
    dense = jax.jit(deviance_function(model.arrays, model.shape, "dense"))
    rng = np.random.default_rng(3)
    for _ in range(2):
        theta = model.initial_theta() + 0.3 * rng.normal(size=model.shape.n_theta)
        np.testing.assert_allclose(float(blocked(theta)), float(dense(theta)), rtol=1e-10)


def explicit_covariance(keyword: str, theta: np.ndarray) -> np.ndarray:
    """Σ/σ² of a 3-column term written out from each structure's docstring formula."""
    lag = np.abs(np.subtract.outer(np.arange(3), np.arange(3)))
    if keyword == "us":
        lam = np.array([[theta[0], 0, 0], [theta[1], theta[2], 0], [0, 0, 0]])[:2, :2]
        return lam @ lam.T
    if keyword == "diag":
        return np.diag(theta ** 2)
    if keyword in ("cs", "homcs"):
        s = theta[:-1] * np.ones(3)
        rho = (np.exp(theta[-1]) - 1) / (np.exp(theta[-1]) + 2)
        return np.outer(s, s) * np.where(lag == 0, 1.0, rho)
    if keyword == "ar1":
        return theta[0] ** 2 * np.tanh(theta[1]) ** lag
    if keyword == "toep":
        pi1, pi2 = np.tanh(theta[3:])
        r2 = pi1 ** 2 + pi2 * (1 - pi1 ** 2)  # Durbin-Levinson for lag 2
        return np.outer(theta[:3], theta[:3]) * np.array([1.0, pi1, r2])[lag]
    if keyword == "expcorr":
        return theta[0] ** 2 * np.exp(-lag / np.exp(theta[1]))
    t = np.where(np.tril(np.ones((3, 3))) > 0, theta[1], 0.0)
    t[:, 0] = 1.0
    return theta[0] ** 2 * t @ t.T


@pytest.mark.parametrize("keyword", list(STRUCTURES))
def test_covariance_formula_and_jit_static(keyword):
    """Σ/σ² = ΛΛ' is the documented formula; the structure is hashable, equal to a rebuilt
    copy, and gives the same Λ as a static argument of jit as eagerly."""
    dim = 2 if keyword == "us" else 3
    structure = make_structure(keyword, dim, "test")
    theta = np.asarray(STRUCTURES[keyword][1], dtype=float)
    lam = structure.relative_factor(jnp.asarray(theta))
    np.testing.assert_allclose(lam @ lam.T, explicit_covariance(keyword, theta), rtol=1e-12, atol=1e-14)
    assert structure == make_structure(keyword, dim, "test")
    assert hash(structure) == hash(make_structure(keyword, dim, "test"))
    jitted = jax.jit(lambda s, t: s.relative_factor(t), static_argnums=0)
    np.testing.assert_allclose(jitted(structure, jnp.asarray(theta)), lam, rtol=1e-14)
    flipped = jnp.asarray(theta) * jnp.where(jnp.asarray(structure.lower_bounded()), -1.0, 1.0)
    canonical = structure.canonicalize(flipped)
    assert np.all(np.asarray(canonical)[structure.lower_bounded()] >= 0)
    lam_f, lam_c = structure.relative_factor(flipped), structure.relative_factor(canonical)
    np.testing.assert_allclose(lam_c @ lam_c.T, lam_f @ lam_f.T, rtol=1e-12, atol=1e-14)
    assert len(structure.parameter_names()) == structure.n_params == len(structure.initial_params())


@pytest.mark.parametrize("keyword", list(STRUCTURES))
def test_gradient_matches_finite_differences(keyword, frames):
    model = model_of(keyword, frames["first"], "ML")
    value_and_grad = jax.jit(jax.value_and_grad(deviance_function(model.arrays, model.shape)))
    theta = model.initial_theta() + 0.2 * np.random.default_rng(5).normal(size=model.shape.n_theta)
    grad = np.asarray(value_and_grad(theta)[1])
    h = 1e-5
    fd = [(float(value_and_grad(theta + h * e)[0]) - float(value_and_grad(theta - h * e)[0])) / (2 * h)
          for e in np.eye(len(theta))]
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-6)


def simulate(keyword: str, n_groups: int = 250, seed: int = 11) -> tuple[pd.DataFrame, np.ndarray]:
    """y = 1 + 0.5x + b_g,f + ε with b_g ~ N(0, ΛΛ'), σ = 1, no crossed term."""
    frame = random_frame(seed, n_groups, 2).drop(columns="h")
    structure = make_structure(keyword, 2 if keyword == "us" else 3, "sim")
    theta = np.asarray(STRUCTURES[keyword][1], dtype=float)
    lam = np.asarray(structure.relative_factor(jnp.asarray(theta)))
    rng = np.random.default_rng(seed + 1)
    effects = rng.normal(size=(n_groups, structure.dim)) @ lam.T
    codes = frame["g"].str[1:].astype(int).to_numpy()
    columns = (np.column_stack([np.ones(len(frame)), frame["x"]]) if keyword == "us"
               else pd.get_dummies(frame["f"]).to_numpy(float))
    frame["y"] = 1 + 0.5 * frame["x"] + (columns * effects[codes]).sum(axis=1) + rng.normal(size=len(frame))
    return frame, theta


@pytest.mark.slow
@pytest.mark.parametrize("keyword", list(STRUCTURES))
def test_simulation_recovers_parameters(keyword):
    """θ̂ within 4 Hessian standard errors of the truth (a 1-in-15,000 miss per entry if the
    asymptotic normal approximation holds), and the SEs small enough to mean something."""
    frame, truth = simulate(keyword)
    expr = STRUCTURES[keyword][0]
    result = lmm_jax.fit(f"y ~ x + {keyword}({expr} | g)", frame, method="ML")
    assert result.converged
    se = np.array(list(lmm_jax.structure_parameter_se(result).values()))
    assert np.all(se < 0.3)
    assert np.all(np.abs(result.theta - truth) < 4 * se), (result.theta, truth, se)


# nlme 3.1-160: library(nlme); data(Pastes, package = "lme4")
# lme(strength ~ 1, data = Pastes, random = list(batch = pdCompSymm(~ 0 + cask)), method = m)
# logLik(f); coef(f$modelStruct$reStruct, unconstrained = FALSE)  -> SD ratio, correlation
PASTES_PDCOMPSYMM = {
    "REML": {"loglik": -123.4953729267, "sd_ratio": 3.857905294, "rho": 0.164236697,
             "sigma": 0.8234076992, "intercept": 60.05333333},
    "ML": {"loglik": -123.9972329312, "sd_ratio": 3.769309629, "rho": 0.1244864268,
           "sigma": 0.8234076565, "intercept": 60.05333333},
}


@pytest.mark.parametrize("method", ["REML", "ML"])
def test_homcs_matches_nlme_pdcompsymm(method):
    ref = PASTES_PDCOMPSYMM[method]
    result = lmm_jax.fit("strength ~ 1 + homcs(0 + cask | batch)", lmm_jax.datasets.load("pastes"), method)
    assert abs(result.loglik - ref["loglik"]) < 1e-4
    np.testing.assert_allclose(result.theta[0], ref["sd_ratio"], rtol=1e-4)
    entry = result.structure_parameters()[0]
    assert entry["structure"] == "homcs" and entry["theta_names"] == ["sd_ratio", "rho.logit"]
    np.testing.assert_allclose(entry["derived"]["rho"], ref["rho"], rtol=1e-4)
    np.testing.assert_allclose(result.sigma, ref["sigma"], rtol=1e-4)
    np.testing.assert_allclose(result.fixef.iloc[0], ref["intercept"], rtol=1e-6)
    rows = result.varcorr().query("grp == 'batch'")
    variance = (ref["sd_ratio"] * ref["sigma"]) ** 2
    np.testing.assert_allclose(rows.vcov[rows.var2.isna()], [variance] * 3, rtol=2e-4)
    np.testing.assert_allclose(rows.sdcor[rows.var2.notna()], [ref["rho"]] * 3, rtol=1e-4)
    assert f"batch: homcs, rho = {ref['rho']:.4g}" in result.summary()
    assert result.to_dict()["structure_parameters"][0]["derived"]["rho"] == entry["derived"]["rho"]


def test_structure_identities(frames):
    """ar1 at ρ = 0 is diag with equal variances; homcs is us at the matching Cholesky factor;
    cs at ρ = 0 is diag."""
    frame = frames["first"]
    def dev(keyword, theta):  # θ of the structured term, then 0.8 for (1 | h)
        model = model_of(keyword, frame)
        return float(model.deviance(jnp.asarray(list(theta) + [0.8], dtype=float)))
    assert dev("ar1", [1.3, 0.0]) == pytest.approx(dev("diag", [1.3, 1.3, 1.3]), rel=1e-12)
    assert dev("cs", [0.7, 1.1, 1.4, 0.0]) == pytest.approx(dev("diag", [0.7, 1.1, 1.4]), rel=1e-12)
    homcs = make_structure("homcs", 3, "t").relative_factor(jnp.asarray([1.2, 0.8]))
    chol = np.linalg.cholesky(np.asarray(homcs @ homcs.T))
    us_theta = np.concatenate([chol[j:, j] for j in range(3)])
    us_model = lmm_jax.Model.from_formula("y ~ x + us(0 + f | g) + (1 | h)", frame)
    us_deviance = float(us_model.deviance(jnp.asarray(list(us_theta) + [0.8])))
    assert dev("homcs", [1.2, 0.8]) == pytest.approx(us_deviance, rel=1e-12)


@pytest.mark.parametrize("formula, error, message", [
    ("y ~ x + cs(1 | g)", lmm_jax.DataError, r"structure 'cs' needs at least 2 columns"),
    ("y ~ x + homcs(0 + x | g)", lmm_jax.DataError, r"needs at least 2 columns"),
    ("y ~ x + ar1(1 + x | g)", lmm_jax.DataError, r"ar1 is a structure over the ordered levels of a factor"),
    ("y ~ x + toep(1 + f | g)", lmm_jax.DataError, r"toep\(0 \+ f \| g\)"),
    ("y ~ x + matern(0 + f | g)", lmm_jax.FormulaError, r"unknown covariance structure 'matern'.*cs.*ar1.*expcorr"),
])
def test_structure_errors(formula, error, message, frames):
    with pytest.raises(error, match=message):
        lmm_jax.Model.from_formula(formula, frames["first"])


def test_registration_errors():
    with pytest.raises(ValueError, match="built-in"):
        lmm_jax.register_structure("ar1", EqualSlopes)
    with pytest.raises(ValueError, match="names has 1 entries for n_params = 2"):
        lmm_jax.structure_from_function(exponential_correlation, 2, names=("s",))
    lmm_jax.register_structure("broken", lambda dim: "not a structure")
    with pytest.raises(TypeError, match="returned str, not a CovarianceStructure"):
        lmm_jax.Model.from_formula("y ~ x + broken(0 + f | g)", random_frame(0, 5, 2))


def test_diag_keyword_on_a_factor_is_one_diagonal_term(frames):
    """glmmTMB's diag(0 + f | g): one variance per level, no correlations, one term (lme4's
    `||` does not split a factor's columns)."""
    model = lmm_jax.Model.from_formula("y ~ x + diag(0 + f | g)", frames["first"])
    (term,) = model.design.terms
    assert isinstance(term.structure, lmm_jax.Diagonal) and term.dim == 3


def known_data(m: int = 40, seed: int = 2):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(m, m // 2))
    kinship = a @ a.T / (m // 2)  # rank m/2: positive semi-definite, singular
    levels = [f"id{i:03d}" for i in range(m)]
    ids = np.repeat(np.arange(m), 3)
    alpha = 1.2 * a @ rng.normal(size=m // 2) / np.sqrt(m // 2)
    x = rng.normal(size=ids.size)
    frame = pd.DataFrame({"y": 1 + x + alpha[ids] + rng.normal(size=ids.size), "x": x,
                          "id": [levels[i] for i in ids]})
    return frame, pd.DataFrame(kinship, index=levels, columns=levels)


def test_known_relationship_matrix_likelihood():
    """The criterion at θ equals the textbook ML deviance with V = σ²(θ² Z K Z' + I) computed
    directly in numpy; a shuffled DataFrame K gives the same fit; K = I is lme4's (1 | id)."""
    frame, kinship = known_data()
    result = lmm_jax.fit("y ~ x + (1 | id)", frame, method="ML", known={"id": kinship})
    assert result.converged
    z = pd.get_dummies(frame["id"]).to_numpy(float)
    X = np.column_stack([np.ones(len(frame)), frame["x"]])
    y = frame["y"].to_numpy()
    for theta in (0.5, float(result.theta[0])):
        v0 = theta ** 2 * z @ kinship.to_numpy() @ z.T + np.eye(len(y))
        beta = np.linalg.solve(X.T @ np.linalg.solve(v0, X), X.T @ np.linalg.solve(v0, y))
        r = y - X @ beta
        n = len(y)
        expected = np.linalg.slogdet(v0)[1] + n * (1 + np.log(2 * np.pi * r @ np.linalg.solve(v0, r) / n))
        assert float(result.model.deviance(jnp.asarray([theta]))) == pytest.approx(expected, rel=1e-10)
    order = np.random.default_rng(0).permutation(len(kinship))
    shuffled = lmm_jax.Model.from_formula("y ~ x + (1 | id)", frame, "ML",
                                          known={"id": kinship.iloc[order, order]})
    assert float(shuffled.deviance(jnp.asarray([0.7]))) == pytest.approx(
        float(result.model.deviance(jnp.asarray([0.7]))), rel=1e-12)
    (row,) = result.varcorr().query("grp == 'id'").to_dict("records")
    assert row["var1"] == "(Intercept)" and row["vcov"] == pytest.approx((result.theta[0] * result.sigma) ** 2)
    assert result.ranef()["id"].shape == (40, 1)
    np.testing.assert_allclose(result.predict(frame), result.fitted, rtol=1e-10)
    identity = pd.DataFrame(np.eye(40), index=kinship.index, columns=kinship.index)
    plain = lmm_jax.Model.from_formula("y ~ x + (1 | id)", frame, "ML")
    with_identity = lmm_jax.Model.from_formula("y ~ x + (1 | id)", frame, "ML", known={"id": identity})
    assert float(with_identity.deviance(jnp.asarray([0.7]))) == pytest.approx(
        float(plain.deviance(jnp.asarray([0.7]))), rel=1e-12)


@pytest.mark.parametrize("known, message", [
    ({"id": np.ones((3, 4))}, "must be square"),
    ({"id": np.eye(39)}, "is 39 x 39 but the data have 40 levels"),
    ({"id": np.triu(np.ones((40, 40)))}, "not symmetric"),
    ({"id": -np.eye(40)}, "not positive semi-definite"),
    ({"idx": np.eye(40)}, "'idx', which is not a grouping factor"),
    ({"id": pd.DataFrame(np.eye(2), index=["id000", "zz"], columns=["id000", "zz"])}, "lacks 39 level"),
])
def test_known_matrix_errors(known, message):
    frame, _ = known_data()
    with pytest.raises(ValueError, match=message):
        lmm_jax.Model.from_formula("y ~ x + (1 | id)", frame, known=known)
    with pytest.raises(ValueError, match="random intercept"):
        lmm_jax.Model.from_formula("y ~ x + (x | id)", frame, known={"id": np.eye(40)})


def test_a_structure_with_a_non_finite_hessian_at_its_start_fails_clearly():
    """rho ** lag at rho = 0 has a NaN Hessian under autodiff (0 ** 0): the Newton loop took
    NaN steps from the start until its 200 iterations were spent, and the fit reported
    "maximum number of iterations" with no warning (an audit). Now the start is reported as
    not finite, with a warning from lmm_jax.fit; the built-in ar1 fits the same model."""
    def ar1_by_powers(params, dim):
        lag = jnp.abs(jnp.arange(dim)[:, None] - jnp.arange(dim)[None, :])
        return params[0] ** 2 * jnp.tanh(params[1]) ** lag

    lmm_jax.register_structure("ar1_by_powers", lmm_jax.structure_from_function(
        ar1_by_powers, 2, initial=(1.0, 0.0), scale_parameters=(0,)))
    data = lmm_jax.datasets.load("bodyweight")
    with pytest.warns(UserWarning, match="did not converge .*not finite at the starting values"):
        result = lmm_jax.fit("weight ~ Time * Diet + ar1_by_powers(0 + C(Time) | Rat)", data)
    assert not result.converged
    builtin = lmm_jax.fit("weight ~ Time * Diet + ar1(0 + C(Time) | Rat)", data)
    assert builtin.converged and builtin.loglik == pytest.approx(-566.3782238550, rel=1e-9)
