"""Models with residual (R-side) structures: nlme's `gls` and `lme` with `correlation=`/`weights=`.

    model = ResidualModel.from_formula("distance ~ age * Sex", orthodont,
                                       correlation="cs(~ 1 | Subject)")       # gls
    model = ResidualModel.from_formula("weight ~ Time * Diet + (1 | Rat)", bodyweight,
                                       correlation="ar1(~ 1 | Rat)")          # lme
    result = model.fit()          # `ResidualFitResult`

The fit minimises the same profiled criterion (`likelihood.profiled_deviance`, evaluated by
`residual_evaluator.residual_profile`) over x = (θ, correlation params, variance params),
all unconstrained except lme4's θ bounds, with the exact-Hessian Newton method and the
boundary retry of `model.minimize_with_boundary`.

Log-likelihood convention: nlme's REML `logLik` is -½ lme4's REML criterion, without a
log|X'X| term (checked: on orthodont_gls_cs_reml adding +½ log|X'X| = 9.5525 would miss the
reference by exactly that), so `loglik` and AIC are the base class's; only nlme's BIC
differs: it uses log(n - p) for REML fits (log n for ML), which `ResidualFitResult.bic` follows.
"""

from __future__ import annotations

import dataclasses
from functools import cached_property, partial

import jax
import jax.numpy as jnp
import numpy as np

from .arrays import ModelArrays, bounded_mask, canonical_theta, relative_factors, to_device, to_host
from .design import build_design
from .exported_programs import cached_call
from .likelihood import profiled_deviance, profiled_sigma2
from .model import FitParams, Model, fits_as_host_arguments, minimize_with_boundary
from .residual_design import (CORRELATIONS, VARIANCES, ResidualArrays, build_correlation, build_variance,
                              check_nested, inherit_grouping, nlme_row_order, parse_structure,
                              used_rows)
from .residual_evaluator import (ResidualShape, dense_residual_profile, residual_post_fit,
                                 residual_profile)
from .results import FitResult

RESIDUAL_EVALUATORS = {"blocked": residual_profile, "dense": dense_residual_profile}


def residual_deviance_function(arrays: ModelArrays, res: ResidualArrays, shape: ResidualShape,
                               evaluator: str = "blocked"):
    """x -> -2ℓ(x) (ML) or lme4's REML criterion -2ℓ_R(x), x = (θ, residual params)."""
    if evaluator not in RESIDUAL_EVALUATORS:
        raise ValueError(f"evaluator must be one of {tuple(RESIDUAL_EVALUATORS)}, got {evaluator!r}")
    profile = RESIDUAL_EVALUATORS[evaluator]
    n, p = arrays.X.shape
    return lambda x: profiled_deviance(profile(x, arrays, res, shape), n, p, shape.model.reml)


@partial(jax.jit, static_argnames=("shape", "maxiter", "evaluator"))
def fit_residual_arrays(arrays: ModelArrays, res: ResidualArrays, shape: ResidualShape,
                        x0: jnp.ndarray, maxiter: int = 200, evaluator: str = "blocked") -> FitParams:
    """The whole fit as one pure function of arrays; `FitParams.theta` holds the G-side θ and
    `FitParams.residual` the unconstrained residual parameters."""
    k = shape.model.n_theta
    deviance = residual_deviance_function(arrays, res, shape, evaluator)
    bounded = np.concatenate([bounded_mask(shape.model) if k else np.zeros(0, bool),
                              np.zeros(shape.n_residual, bool)])

    def canonicalize(x):
        return jnp.concatenate([canonical_theta(x[:k], shape.model), x[k:]]) if k else x

    x, best, iterations, singular = minimize_with_boundary(deviance, x0, bounded, canonicalize, maxiter)
    profiled = RESIDUAL_EVALUATORS[evaluator](x, arrays, res, shape)
    n, p = arrays.X.shape
    objective = profiled_deviance(profiled, n, p, shape.model.reml)
    return FitParams(x[:k], profiled.beta, profiled_sigma2(profiled, n, p, shape.model.reml), objective,
                     -0.5 * objective, jnp.max(jnp.abs(best.grad), initial=0.0), iterations, best.status, singular,
                     x[k:])


class ResidualModel(Model):
    """A `Model` with residual correlation and/or variance function (nlme's gls/lme)."""

    def __init__(self, design, data, method: str = "REML", data_name: str | None = None,
                 correlation: str | None = None, variance: str | None = None):
        super().__init__(design, method, data_name)
        frame = used_rows(data, design)
        cor_spec = None if correlation is None else \
            inherit_grouping(parse_structure(correlation, CORRELATIONS, "correlation"), design)
        var_spec = None if variance is None else parse_structure(variance, VARIANCES, "weights")
        structure, index, mask, coords = build_correlation(frame, cor_spec)
        if cor_spec is not None:
            check_nested(design, index, mask, cor_spec)
        var_fn, var_codes, covariate = build_variance(frame, var_spec, nlme_row_order(design, frame, cor_spec))
        self.correlation_spec, self.variance_spec = cor_spec, var_spec
        self.residual_shape = ResidualShape(self.shape, structure, var_fn)
        self.host_residual_arrays = ResidualArrays(*(np.array(a) for a in (index, mask, coords, var_codes,
                                                                             covariate)))
        self._residual_arrays = None  # `residual_arrays`, copied to the device on first use

    @property
    def residual_arrays(self) -> ResidualArrays:
        """The residual structures' arrays on the default device, copied there once, when
        first asked for (`to_device`: `jnp.asarray` compiled a conversion program for each
        of the five, and x₀ one: with the eager `natural` calls 0.14-0.23 s of a cold CLI
        run); `fit` passes the host arrays of a small model to its program instead, as
        `Model.fit` does."""
        return self._kept_on_device("_residual_arrays", lambda: self.host_residual_arrays)

    @classmethod
    def from_formula(cls, formula: str, data, method: str = "REML", weights=None,
                     data_name: str | None = None, correlation: str | None = None,
                     variance: str | None = None) -> "ResidualModel":
        """`formula` may lack random terms (a gls fit; with no residual structure either, the
        linear model fitted by REML or ML); `weights` are prior weights (array or column),
        `variance` a variance function string."""
        design = build_design(formula, data, weights, allow_fixed_only=True)
        return cls(design, data, method, data_name, correlation, variance)

    def with_method(self, method: str) -> "ResidualModel":
        """The same model, its residual structures included, to be fitted by `method`."""
        other = super().with_method(method)
        other.residual_shape = dataclasses.replace(self.residual_shape, model=other.shape)
        return other

    def initial_theta(self) -> jnp.ndarray:
        """The starting x = (θ, correlation params, variance params), on the device (copied
        there once per model)."""
        return self._kept_on_device("_initial_theta", self.residual_shape.initial)

    def deviance(self, x, y=None, evaluator: str = "blocked"):
        """-2ℓ or lme4's REML criterion at x = (θ, residual params)."""
        return residual_deviance_function(self.with_arrays(y), self.residual_arrays, self.residual_shape,
                                          evaluator)(jnp.asarray(x))

    def fit_params(self, y=None, X=None, weights=None, theta0=None, evaluator: str = "blocked") -> FitParams:
        """The estimates as a pure function of y (jit-able; no implicit derivatives yet, and under
        vmap the small dense Cholesky factors would become batched LAPACK calls)."""
        x0 = self.initial_theta() if theta0 is None else jnp.asarray(theta0)
        return fit_residual_arrays(self.with_arrays(y, X, weights), self.residual_arrays,
                                   self.residual_shape, x0, evaluator=evaluator)

    def blups(self, *args, **kwargs):
        raise NotImplementedError("blups() with residual structures: use fit().ranef()")

    def fit(self) -> "ResidualFitResult":
        """Fit and return a `ResidualFitResult`: the fit and its summaries as one program
        (`fit_residual_with_summaries`), one call and one copy back."""
        self.design.check_not_exactly_fitted()
        params, post_fit, natural = to_host(cached_call(fit_residual_with_summaries, self._program_arguments(),
                                                         dict(shape=self.residual_shape)))
        return ResidualFitResult(self, params, post_fit, natural)

    def _program_arguments(self) -> dict:
        """`arrays`, `res` and `x0` for a compiled program called from the host: the host
        arrays of a small model not yet on the device, else the device arrays
        (`Model._program_arguments`)."""
        host = dict(arrays=self.host_arrays, res=self.host_residual_arrays)
        if self._arrays is None and self._residual_arrays is None and fits_as_host_arguments(host):
            return dict(host, x0=self.residual_shape.initial())
        return dict(arrays=self.arrays, res=self.residual_arrays, x0=self.initial_theta())


@partial(jax.jit, static_argnames=("shape",))
def _post_fit(arrays, res, shape: ResidualShape, x, beta, sigma2):
    """(X'V⁻¹X)⁻¹ (V over σ²), the random effects (empty without random terms), the fitted
    values and each term's ΛΛ' at x = (θ̂, residual params), β̂ and σ̂²."""
    xtvx_inv, effects, fitted = residual_post_fit(x, arrays, res, shape, beta, sigma2)
    theta, _, _ = shape.split(x)
    rel = [lam @ lam.T for lam in relative_factors(theta, shape.model)] if shape.model.n_levels else []
    return xtvx_inv, effects, fitted, rel


@partial(jax.jit, static_argnames=("shape",))
def fit_residual_with_summaries(arrays: ModelArrays, res: ResidualArrays, shape: ResidualShape, x0):
    """(`fit_residual_arrays`'s `FitParams`, `_post_fit`'s summaries at its estimates): the
    twin of `results.fit_with_summaries` for residual structures."""
    params = fit_residual_arrays(arrays, res, shape, x0)
    x = jnp.concatenate([params.theta, params.residual])
    return params, _post_fit(arrays, res, shape, x, params.beta, params.sigma2), natural_parameters(x, shape)


def natural_parameters(x, shape: ResidualShape):
    """(correlation, variance function) parameters at x as nlme reports them (each
    structure's `natural`; empty for an absent structure): computed in the fit's program,
    as eager calls on the host compiled a program each in a cold process."""
    _, a_cor, a_var = shape.split(x)
    return tuple(structure.natural(a) if structure.n_params else a
                 for structure, a in ((shape.correlation, a_cor), (shape.variance, a_var)))


class ResidualFitResult(FitResult):
    """A fitted gls/lme model with residual structures; nlme's logLik, AIC and BIC. A gls
    fit by ML reports nlme's Var(β̂) = σ̂² (X'V₀⁻¹X)⁻¹ N/(N - p) (gls's varBeta scales by
    (N - REML·p)/(N - p); lme's does not): σ̂²_ML alone gave SEs √(N/(N - p)) too small."""

    small_sample_supported = False  # small_sample.py differentiates the plain model's V₀

    def __init__(self, model, params, post_fit=None, natural=None):
        """`natural`: `natural_parameters` at the estimates on the host (the fit's program
        computes them), or None to compute them here."""
        super().__init__(model, params, post_fit)
        if not self.design.terms and self.method == "ML":  # nlme's gls: (N - REML p)/(N - p)
            n, p = self.nobs, self.design.n_fixed
            self._vcov_values = self._vcov_values * n / (n - p)
        if natural is None:
            natural = to_host(natural_parameters(to_device(self._estimated_x()), model.residual_shape))
        self._correlation_natural, self._variance_natural = natural

    @cached_property
    def convergence_checks(self) -> tuple[list[str], list[str]]:
        """The design's structural checks (`identifiability.py`) only: lme4's checkConv
        (`convergence_check.py`) differentiates the criterion of V₀ = ZΛΛ'Z' + I, not this
        fit's (it reported max|grad| = 1.69 at nlme's optimum of a fit with ar1 residuals)."""
        from .identifiability import identifiability_messages

        return identifiability_messages(self.design), []

    def _estimated_x(self) -> np.ndarray:
        """x̂ = (θ̂, residual params) on the host, as the fit returned them."""
        return np.concatenate([np.asarray(self.params.theta), np.asarray(self.params.residual)])

    def _post_fit_values(self):
        model, params = self.model, self.params
        args = dict(arrays=model.arrays, res=model.residual_arrays, x=to_device(self._estimated_x()),
                    beta=params.beta, sigma2=params.sigma2)
        return cached_call(_post_fit, args, dict(shape=model.residual_shape))

    @property
    def df_model(self) -> int:
        return self.design.n_fixed + len(self.theta) + self.model.residual_shape.n_residual + 1

    @property
    def bic(self) -> float:
        n = self.nobs - (self.design.n_fixed if self.method == "REML" else 0)
        return -2.0 * self.loglik + np.log(n) * self.df_model

    @property
    def correlation_parameters(self) -> list[float] | None:
        """nlme's correlation parameters (φ; ρ; the lower triangle column by column; range
        then nugget), or None without a correlation structure."""
        if self.model.residual_shape.correlation.n_params == 0:
            return None
        return [float(v) for v in self._correlation_natural]

    @property
    def variance_function(self) -> dict | None:
        """{level: SD ratio to the first level} (ident), {'power': δ} (power), or None."""
        variance = self.model.residual_shape.variance
        if variance.n_params == 0:
            return None
        return {str(k): float(v) for k, v in zip(variance.labels(), self._variance_natural)}

    def summary(self) -> str:
        lines = [super().summary().rstrip("\n")]
        if self.model.correlation_spec is not None:
            lines.append(f"Correlation structure {self.model.correlation_spec.text}: "
                         + ", ".join(f"{v:.4g}" for v in self.correlation_parameters))
        if self.model.variance_spec is not None:
            lines.append(f"Variance function {self.model.variance_spec.text}: "
                         + ", ".join(f"{k} {v:.4g}" for k, v in self.variance_function.items()))
        lines.append(f"logLik (nlme): {self.loglik:.4f}  AIC {self.aic:.2f}  BIC {self.bic:.2f}")
        return "\n".join(lines) + "\n"

    # The methods below are written for V₀ = ZΛΛ'Z' + I: on these fits they would use the
    # model without its residual structures, a silently wrong number (an audit: anova()'s F
    # 24.46 where (β̂/SE)² and nlme give 33.02), or crash deep inside. They refuse instead.
    def influence(self) -> dict:
        raise self._not_implemented("influence()")

    def variance_components(self):
        raise self._not_implemented("variance_components()")

    def fisher_information(self, kind: str = "expected"):
        raise self._not_implemented("fisher_information()")

    def robust_vcov(self) -> dict:
        raise self._not_implemented("robust_vcov()")

    def small_sample_terms(self):
        raise self._not_implemented("Satterthwaite and Kenward-Roger tests (test(), anova())",
                                    "the SEs of summary() and vcov, and confint(method='wald'), hold")

    def confint(self, method: str = "profile", *args, **kwargs):
        if str(method).lower() != "wald":
            raise self._not_implemented(f"confint(method={method!r})", "method='wald' gives β's intervals")
        return super().confint(method, *args, **kwargs)

    def _not_implemented(self, what: str, instead: str = "") -> NotImplementedError:
        """The error of a method written for V₀ = ZΛΛ'Z' + I: with residual structures it
        would use the model without them; a linear model (no random terms, no structures)
        is fitted on this path too, and those methods are not written for it either."""
        if self.model.correlation_spec is None and self.model.variance_spec is None:
            where = "for a linear model without random terms (lmm_jax fits it as a gls) is not implemented"
        else:
            where = ("with residual structures (correlation= or a weights= variance function) is not "
                     "implemented: it would use the model without them")
        return NotImplementedError(f"{what} {where}" + (f"; {instead}" if instead else ""))
