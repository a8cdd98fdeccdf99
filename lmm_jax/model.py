"""`Model`: a design built once on the host, and the fit as a pure jit-compiled function.

    model = Model.from_formula("Reaction ~ Days + (Days | Subject)", data)
    params = model.fit_params()          # pure JAX: FitParams of arrays
    result = model.fit()                 # FitResult: lme4-style summaries

The fit minimises the profiled deviance (`likelihood.profiled_deviance`) over θ with a
trust-region Newton method using the exact Hessian, starting from lme4's θ₀ (identity
factors); large crossed designs use a BFGS Hessian instead (`optimizer_hessian`), started
from moment estimates (`moment_start.py`) or, from a θ₀ other than lme4's or for other
structures, from a search (`start_search.py`). Afterwards θ is put in canonical form
(non-negative diagonals), and factor diagonals near zero are tried at exactly zero, with
the other parameters re-optimised; that boundary point is kept when its deviance is no
worse (a singular fit, reported).

With `known_scale=True` the prior weights are the known inverse residual variances
(W⁻¹ = diag(D_i)) and σ² = 1 is fixed, not profiled: the Fay-Herriot model is
`Model.from_formula("y ~ x + (1 | area)", data, weights=1/D, known_scale=True)`, whose
θ² is the area variance A.
"""

from __future__ import annotations

import copy
import dataclasses
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _config  # noqa: F401  (float64)
from . import moment_start, single_term_derivatives
from .arrays import ModelArrays, ModelShape, bounded_mask, canonical_theta, to_device, to_host
from .blocked import blocked_profile, blocked_profile_and_xtvx_inverse, cross_products, rest_size
from .conditioning import conditioned, fitted_exactly, user_profiled, user_xtvx_inverse
from .dense import dense_profile
from .design import EXACT_FIT_TOLERANCE, Design, build_design
from .exported_programs import cached_call
from .likelihood import Profiled, known_scale_deviance, profiled_deviance, profiled_sigma2
from .loop_carries import data_reference, tied_to
from .newton import EXACT_FIT, OptimResult, minimize
from .sparse_schur import schur_pairs
from .term_centring import centred_arrays, centred_theta, centring_maps, user_theta
from .start_search import quasi_newton_start

SINGULAR_TOLERANCE = 1e-4  # lme4's isSingular(tol = 1e-4) on bounded θ entries
BOUNDARY_CANDIDATE = 1e-2  # bounded θ entries below this are tried at exactly zero
BOUNDARY_SLACK = 1e-8  # deviance increase allowed when moving to the boundary


class FitParams(NamedTuple):
    """The estimates as arrays: a pure function's output, batchable with vmap."""

    theta: jnp.ndarray
    beta: jnp.ndarray
    sigma2: jnp.ndarray
    objective: jnp.ndarray  # deviance (ML) or REML criterion: -2 log-likelihood
    loglik: jnp.ndarray
    gradient_norm: jnp.ndarray
    iterations: jnp.ndarray
    status: jnp.ndarray
    singular: jnp.ndarray
    residual: jnp.ndarray | None = None  # R-side parameters, unconstrained (`residual_model.py`)


def host_arrays(design: Design) -> ModelArrays:
    """The design's arrays as a `ModelArrays` of numpy arrays (the design's own)."""
    return ModelArrays(design.y, design.X, design.weights, tuple(t.codes for t in design.terms),
                       tuple(t.values for t in design.terms), schur_pairs(design))


def make_shape(design: Design, method: str, known_scale: bool = False) -> ModelShape:
    return ModelShape(tuple(t.n_levels for t in design.terms),
                      tuple(t.structure for t in design.terms), _is_reml(method), bool(known_scale))


def _is_reml(method: str) -> bool:
    if not isinstance(method, str) or method.upper() not in ("REML", "ML"):
        raise ValueError(f"method must be 'REML' or 'ML', got {method!r}")
    return method.upper() == "REML"


EVALUATORS = ("blocked", "dense")


def profile_function(arrays: ModelArrays, shape: ModelShape, evaluator: str = "blocked"):
    """θ -> `Profiled` through the blocked (fast) or the dense (oracle) evaluator, which see
    the conditioned arrays (y's least-squares residual, an orthonormalised X:
    `conditioning.py`); β̂ and log|X'V₀⁻¹X| are mapped back to the user's X and y."""
    data, rep = conditioned(arrays)
    profile = _evaluator(data, shape, evaluator)
    return lambda theta: user_profiled(profile(theta), rep)


def _evaluator(arrays: ModelArrays, shape: ModelShape, evaluator: str):
    """θ -> `Profiled` of `arrays` as they are, blocked or dense."""
    if evaluator == "dense":
        return lambda theta: dense_profile(theta, arrays, shape)
    if evaluator != "blocked":
        raise ValueError(f"evaluator must be one of {EVALUATORS}, got {evaluator!r}")
    cp = cross_products(arrays, shape)
    return lambda theta: blocked_profile(theta, cp, shape)


def observation_count(arrays: ModelArrays, shape: ModelShape) -> tuple:
    """(n, p); in a padded model (`ModelShape.padded`: `ragged.py`'s batches) n counts the
    rows of positive prior weight only, as padding rows have weight 0."""
    n, p = arrays.X.shape
    return (jnp.sum(arrays.weights > 0) if shape.padded else n), p


def criterion(profiled: Profiled, arrays: ModelArrays, shape: ModelShape) -> jnp.ndarray:
    """-2ℓ or -2ℓ_R from `Profiled`: σ² profiled out, or fixed at 1 for a known scale."""
    n, p = observation_count(arrays, shape)
    if not shape.known_scale:
        return profiled_deviance(profiled, n, p, shape.reml)
    logdet_xtx = jnp.linalg.slogdet(arrays.X.T @ arrays.X)[1] if shape.reml else 0.0
    return known_scale_deviance(profiled, n, p, shape.reml, logdet_xtx)


def sigma2_estimate(profiled: Profiled, arrays: ModelArrays, shape: ModelShape) -> jnp.ndarray:
    """σ̂² = r²/d, or 1 for a known scale."""
    if shape.known_scale:
        return jnp.ones_like(profiled.rss)
    n, p = observation_count(arrays, shape)
    return profiled_sigma2(profiled, n, p, shape.reml)


def deviance_function(arrays: ModelArrays, shape: ModelShape, evaluator: str = "blocked"):
    """θ -> -2ℓ(θ) (ML) or -2ℓ_R(θ) (REML)."""
    profile = profile_function(arrays, shape, evaluator)
    return lambda theta: criterion(profile(theta), arrays, shape)


QUASI_NEWTON_MIN_REST = 256  # Schur complements this large: BFGS instead of exact Hessians


def optimizer_hessian(arrays: ModelArrays, shape: ModelShape, evaluator: str = "blocked") -> str:
    """"exact" (`newton.minimize`'s default), or "bfgs" for a model whose blocked Schur
    complement has r ≥ `QUASI_NEWTON_MIN_REST` rows. On large crossed designs an exact
    Hessian by autodiff through the dense r x r factor costs ~10 gradients (InstEval: 2.3
    against 0.25 s), while BFGS from `quasi_newton_start`'s start and value-difference
    Hessian needs 2-3 iterations where exact Newton needed 14. Decided from static shapes."""
    r = rest_size(shape) + arrays.X.shape[1] + 1
    return "bfgs" if evaluator == "blocked" and r >= QUASI_NEWTON_MIN_REST else "exact"


def closed_form_derivatives(arrays: ModelArrays, shape: ModelShape, evaluator: str = "blocked"):
    """θ -> (criterion, gradient, Hessian) in closed form for a blocked model with one small
    random term (`single_term_derivatives.py`: ~2x cheaper than autodiff, the bulk of a
    batch of sleepstudy-shaped fits), else None (autodiff of the criterion)."""
    if evaluator != "blocked" or not single_term_derivatives.applies(arrays, shape):
        return None
    data, rep = conditioned(arrays)
    return single_term_derivatives.value_grad_hess_function(
        data, shape, lambda profiled: criterion(user_profiled(profiled, rep), arrays, shape))


def minimize_with_boundary(deviance, x0: jnp.ndarray, bounded, canonicalize, maxiter: int,
                           hessian: str = "exact", derivatives=None, start_hessian=None):
    """Minimise, put x in canonical form, then retry bounded entries near 0 at exactly 0
    (the others re-optimised) and keep that point when its deviance is no worse
    (`derivatives`: `newton.minimize`'s closed-form value, gradient and Hessian, or None;
    `start_hessian`: BFGS's H at x0, and the retries start from the first minimum's H).
    The retries: all entries near 0 held at 0 together, then each alone, the others free
    (`_boundary_choice`). Returns (x, the kept `OptimResult`, total iterations, singular).
    With no parameters at all (a linear model) there is nothing to optimise: the criterion
    is evaluated once."""
    if x0.size == 0:
        empty = OptimResult(x0, deviance(x0), x0, jnp.zeros((0, 0), x0.dtype),
                            jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))
        return x0, empty, empty.iterations, jnp.zeros((), bool)
    bounded_array = jnp.asarray(bounded)
    entries = jnp.arange(x0.size)

    def phase(first, index):
        """Phase 0 from x0 with every entry free; phase 1 from the first minimum with the
        bounded entries near 0 set to exactly 0 and held there; phase 1 + j the same with
        entry j - 1 alone held, if it is one of several near 0, or if phase 0 did not
        converge (then whatever its size: a free Newton loop can creep along a flat valley
        towards a boundary for all its iterations). One traced `minimize` serves all
        (`lax.scan`), so the Newton loop is compiled once. The carry: the first minimum (x,
        whether it converged, and with `start_hessian` its BFGS H: a scan carry only then,
        since one that came out batched under vmap would re-batch the body)."""
        first_x, first_converged, first_hess = first if start_hessian is not None else (*first, None)
        x = canonicalize(first_x)
        near_zero = bounded_array & (jnp.abs(x) < BOUNDARY_CANDIDATE)
        single = (index > 1) & (entries == index - 2) & bounded_array \
            & ((near_zero & (jnp.sum(near_zero) > 1)) | ~first_converged)
        candidates = jnp.where(index == 1, near_zero, single) & (index > 0)
        tried = (index == 0) | jnp.any(candidates)
        start = jnp.where(index == 0, x0, jnp.where(candidates, 0.0, x))
        hess0 = None if start_hessian is None else jnp.where(index == 0, start_hessian, first_hess)
        result = minimize(deviance, start, ~candidates, maxiter=maxiter, hessian=hessian,
                          derivatives=derivatives, run=tried, hess0=hess0)
        kept = (result.x, result.converged) + (() if start_hessian is None else (result.hess,))
        carry = jax.tree_util.tree_map(lambda new, old: jnp.where(index == 0, new, old), kept, first)
        return carry, (result, tried)

    if not np.any(bounded):  # nothing to try on the boundary (e.g. a gls fit)
        first = minimize(deviance, x0, maxiter=maxiter, hessian=hessian, derivatives=derivatives,
                         hess0=start_hessian)
        return canonicalize(first.x), first, first.iterations, jnp.zeros((), bool)
    not_yet = tied_to(jnp.zeros((), bool), x0[0])  # batched wherever x0 is (`loop_carries`)
    initial = (x0, not_yet) + (() if start_hessian is None else (start_hessian,))
    _, (phases, tried) = jax.lax.scan(phase, initial, jnp.arange(2 + x0.size))
    best = _boundary_choice(phases, tried)
    x = canonicalize(best.x)
    singular = jnp.any(bounded & (jnp.abs(x) < SINGULAR_TOLERANCE))
    return x, best, jnp.sum(phases.iterations * tried), singular


def _boundary_choice(phases: OptimResult, tried):
    """The kept phase of `minimize_with_boundary`: all near-zero entries at 0 (phase 1) when
    it converged no more than `BOUNDARY_SLACK` above the free minimum (phase 0), else the
    lowest of the single-entry phases that did, else the free minimum. A fit whose optimum
    has one entry at 0 and another small but positive needs the single ones (sleepstudy-
    shaped data with θ̂ ≈ (8.5e-4, -0.12, 0): the free Newton loop crept towards θ₃ = 0 for
    200 iterations, and both at 0 was 5.6e-8 worse; not converged, where θ₃ = 0 alone is)."""
    fun, index = phases.fun, jnp.arange(phases.fun.shape[0])
    qualifies = tried & phases.converged & (fun <= fun[0] + BOUNDARY_SLACK) & (index > 0)
    single = jnp.where(qualifies & (index > 1), fun, jnp.inf)
    choice = jnp.where(qualifies[1], 1, jnp.where(jnp.isfinite(jnp.min(single)), jnp.argmin(single), 0))
    return jax.tree_util.tree_map(lambda a: a[choice], phases)


@partial(jax.jit, static_argnames=("shape", "maxiter", "evaluator"))
def fit_arrays(arrays: ModelArrays, shape: ModelShape, theta0: jnp.ndarray,
               maxiter: int = 200, evaluator: str = "blocked") -> FitParams:
    """The whole fit as one pure function of arrays (jit/vmap-able), on the terms' centred
    columns (`term_centring.py`), θ̂ reported on the user's."""
    data, maps, optimum = _centred_optimum(arrays, shape, theta0, maxiter, evaluator)
    params = _fit_params(optimum, profile_function(data, shape, evaluator)(optimum[0]), data, shape)
    return params._replace(theta=user_theta(params.theta, maps, shape))


def fit_arrays_with_xtvx_inverse(arrays: ModelArrays, shape: ModelShape, theta0: jnp.ndarray,
                                 maxiter: int = 200) -> tuple[FitParams, jnp.ndarray]:
    """`fit_arrays` (blocked evaluator) and (X'V₀⁻¹X)⁻¹ at θ̂, both from one factor of the
    Schur complement at θ̂ (`blocked_profile_and_xtvx_inverse`: batch fits' standard errors)."""
    data, maps, optimum = _centred_optimum(arrays, shape, theta0, maxiter, "blocked")
    conditioned_data, rep = conditioned(data)
    profiled, xtvx_inv = blocked_profile_and_xtvx_inverse(optimum[0], cross_products(conditioned_data, shape),
                                                          shape)
    params = _fit_params(optimum, user_profiled(profiled, rep), data, shape)
    return params._replace(theta=user_theta(params.theta, maps, shape)), user_xtvx_inverse(xtvx_inv, rep)


def _centred_optimum(arrays: ModelArrays, shape: ModelShape, theta0: jnp.ndarray, maxiter: int,
                     evaluator: str):
    """(the arrays on the terms' centred columns, the terms' maps B, `_optimum` there): θ₀ is
    mapped to the centred columns, except lme4's default θ₀ (identity factors), which is
    the start in whatever columns are fitted."""
    maps = centring_maps(arrays, shape)
    data = centred_arrays(arrays, maps)
    default = jnp.all(theta0 == shape.initial_theta())
    start = jnp.where(default, theta0, centred_theta(theta0, maps, shape))
    return data, maps, _optimum(data, shape, start, maxiter, evaluator)


def _optimum(arrays: ModelArrays, shape: ModelShape, theta0: jnp.ndarray, maxiter: int, evaluator: str):
    """(θ̂, the kept `OptimResult`, iterations, singular): `minimize_with_boundary` on the
    criterion, from θ₀ or (BFGS fits) from `_quasi_newton_start`'s start and Hessian."""
    theta0 = tied_to(theta0, data_reference((arrays, theta0)))  # under vmap: batched loop carries
    deviance = deviance_function(arrays, shape, evaluator)
    hessian = optimizer_hessian(arrays, shape, evaluator)
    bounded = bounded_mask(shape)
    start, start_hessian = (_quasi_newton_start(deviance, arrays, shape, theta0, bounded)
                            if hessian == "bfgs" and shape.n_theta else (theta0, None))
    return minimize_with_boundary(deviance, start, bounded, lambda t: canonical_theta(t, shape),
                                  maxiter, hessian, closed_form_derivatives(arrays, shape, evaluator), start_hessian)


def _quasi_newton_start(deviance, arrays: ModelArrays, shape: ModelShape, theta0: jnp.ndarray, bounded):
    """BFGS's start and start Hessian (`start_search.quasi_newton_start`): from lme4's θ₀
    (identity factors, the default) the MINQUE(0) moment estimate where it is defined
    (`moment_start.py`) and finite, with no halving search; from any other θ₀ (or where the
    moment start is not defined) the search from θ₀."""
    if not moment_start.applies(shape):
        return quasi_newton_start(deviance, theta0, shape, bounded)
    data = conditioned(arrays)[0]
    moments = moment_start.moment_start(cross_products(data, shape), data, shape,
                                        observation_count(arrays, shape)[0])
    use_moments = jnp.all(theta0 == shape.initial_theta()) & jnp.all(jnp.isfinite(moments))
    return quasi_newton_start(deviance, jnp.where(use_moments, moments, theta0), shape, bounded,
                              search=jnp.logical_not(use_moments))


def _fit_params(optimum, profiled: Profiled, arrays: ModelArrays, shape: ModelShape) -> FitParams:
    """`FitParams` from `_optimum`'s record and the profiled quantities at θ̂."""
    theta, best, iterations, singular = optimum
    objective = criterion(profiled, arrays, shape)
    params = FitParams(theta, profiled.beta, sigma2_estimate(profiled, arrays, shape), objective,
                       -0.5 * objective, jnp.max(jnp.abs(best.grad)), iterations, best.status, singular)
    return params if shape.known_scale else _marked_if_exact(params, arrays)


def _marked_if_exact(params: FitParams, arrays: ModelArrays) -> FitParams:
    """A response X fits exactly (`conditioning.fitted_exactly`) has no optimum (the criterion
    falls without bound as σ² -> 0): status `EXACT_FIT`, θ̂, σ̂² and the criterion NaN, β̂ the
    least-squares fit, as `fit_batch` marks it."""
    exact = fitted_exactly(arrays, EXACT_FIT_TOLERANCE)
    nan = jnp.asarray(jnp.nan, params.sigma2.dtype)
    return params._replace(
        theta=jnp.where(exact, nan, params.theta),
        beta=jnp.where(exact, conditioned(arrays)[1].shift, params.beta),
        sigma2=jnp.where(exact, nan, params.sigma2), objective=jnp.where(exact, nan, params.objective),
        loglik=jnp.where(exact, nan, params.loglik), singular=params.singular & ~exact,
        status=jnp.where(exact, EXACT_FIT, params.status))


class Model:
    """A linear mixed model: its design (host side) and its arrays (device side)."""

    def __init__(self, design: Design, method: str = "REML", data_name: str | None = None,
                 known_scale: bool = False):
        self.design = design
        self.method = "REML" if _is_reml(method) else "ML"
        self.shape = make_shape(design, self.method, known_scale)
        self.host_arrays = host_arrays(design)
        self.data_name = data_name
        self._arrays = None  # `arrays`, copied to the device on first use
        self._initial_theta = None  # `initial_theta`, copied to the device on first use

    @property
    def arrays(self) -> ModelArrays:
        """The model's arrays on the default device (`to_device`, in one call), copied there
        once, when first asked for: `fit` passes the host arrays to its compiled program
        instead, whose call copies them in ~0.02 ms where `to_device` takes ~0.15 ms
        (sleepstudy's nine arrays)."""
        return self._kept_on_device("_arrays", lambda: self.host_arrays)

    def _kept_on_device(self, name: str, host):
        """`host()` copied to the default device (`to_device`) the first time it is asked for,
        and kept as the attribute `name` (None until then): concrete even when first asked
        for inside a trace."""
        if getattr(self, name) is None:
            with jax.ensure_compile_time_eval():
                setattr(self, name, to_device(host()))
        return getattr(self, name)

    @classmethod
    def from_formula(cls, formula: str, data, method: str = "REML", weights=None,
                     data_name: str | None = None, known_scale: bool = False, known=None) -> "Model":
        """Build the design of `formula` on `data` (a DataFrame or dict of arrays).

        `known_scale=True`: the residual variances are known, Var(ε_i) = 1/weights_i, and
        σ² = 1 is fixed instead of estimated (Fay-Herriot, meta-analysis: weights = 1/D).
        A grouping factor may then have one level per row. `known`: {grouping factor: K}, a
        known relationship matrix for a term (1 | g) (`known_covariance.py`).
        """
        _is_reml(method)
        return cls(build_design(formula, data, weights, known_scale, known), method, data_name,
                   known_scale)

    def with_method(self, method: str) -> "Model":
        """The same model (design, arrays, structures) to be fitted by `method` instead."""
        other = copy.copy(self)
        other.method = "REML" if _is_reml(method) else "ML"
        other.shape = dataclasses.replace(self.shape, reml=other.method == "REML")
        return other

    def initial_theta(self) -> jnp.ndarray:
        """lme4's θ₀ (identity factors), on the device: copied there once per model (a copy
        per call took ~0.08 ms of a warm sleepstudy `fit_params`'s 0.3 ms)."""
        return self._kept_on_device("_initial_theta", self.shape.initial_theta)

    def with_arrays(self, y=None, X=None, weights=None) -> ModelArrays:
        """The model's arrays with y, X or the prior weights replaced (shapes must match)."""
        arrays = self.arrays
        replace = {"y": y, "X": X, "weights": weights}
        for name, value in replace.items():
            if value is not None:
                value = jnp.asarray(value)
                old = getattr(arrays, name)
                if value.shape != old.shape:
                    raise ValueError(f"{name} must have shape {old.shape}, got {value.shape}")
                arrays = dataclasses.replace(arrays, **{name: value})
        return arrays

    def deviance(self, theta, y=None, evaluator: str = "blocked"):
        """-2ℓ(θ) or -2ℓ_R(θ) at θ (lme4's `devfun`)."""
        return deviance_function(self.with_arrays(y), self.shape, evaluator)(jnp.asarray(theta))

    def fit_params(self, y=None, X=None, weights=None, theta0=None,
                   evaluator: str = "blocked") -> FitParams:
        """The estimates as a pure function of y (and optionally X, weights): jit/vmap-able,
        and differentiable w.r.t. y, X and weights by the implicit function theorem
        (`implicit.py`; bounded θ entries at exactly 0 are held fixed). `theta0`: the
        optimiser's start, lme4's θ₀ by default (a large model's BFGS fit then starts from
        moment estimates instead: `moment_start.py`)."""
        from .implicit import differentiable_fit_arrays

        theta0 = self.initial_theta() if theta0 is None else jnp.asarray(theta0)
        return differentiable_fit_arrays(self.with_arrays(y, X, weights), self.shape, theta0,
                                         evaluator=evaluator)

    def blups(self, y=None, X=None, weights=None, theta0=None) -> jnp.ndarray:
        """Conditional modes b̂ of all terms at the fit, concatenated term by term and
        level-major (term 1's levels' p₁ effects, then term 2's, ...); differentiable
        w.r.t. y, X and weights like `fit_params`."""
        from .implicit import conditional_modes

        params = self.fit_params(y, X, weights, theta0)
        return conditional_modes(self.with_arrays(y, X, weights), self.shape, params)

    def fit(self):
        """Fit and return a `FitResult` with lme4's summaries (`fit_arrays`, the same values as
        `fit_params` without its derivative rules, and the summaries in the same program:
        `results.fit_with_summaries`; through a stored program when the compilation cache is
        enabled: `exported_programs.py`)."""
        from .results import FitResult, fit_with_summaries

        if not self.shape.known_scale:
            self.design.check_not_exactly_fitted()
        params, post_fit = to_host(cached_call(fit_with_summaries, self._program_arguments(), dict(shape=self.shape)))
        return FitResult(self, params, post_fit)

    def _program_arguments(self) -> dict:
        """`arrays` and `theta0` for a compiled program called from the host: the host
        arrays of a small model not yet on the device (`arrays`), else the device arrays
        (a large model's are copied once, not at every call: InstEval's pair lists are
        ~60 MB)."""
        if self._arrays is None and fits_as_host_arguments(self.host_arrays):
            return dict(arrays=self.host_arrays, theta0=self.shape.initial_theta())
        return dict(arrays=self.arrays, theta0=self.initial_theta())


HOST_ARGUMENT_BYTES = 1 << 20  # host arrays up to this size go to a program as they are


def fits_as_host_arguments(tree) -> bool:
    """Whether host arrays this large (at most `HOST_ARGUMENT_BYTES` in all) go to a compiled
    program as they are, rather than being copied to the device once and kept."""
    return sum(leaf.nbytes for leaf in jax.tree_util.tree_leaves(tree)) <= HOST_ARGUMENT_BYTES
