"""`FitResult`: the estimates of a fitted model with lme4's summaries, computed on the host.

At the estimate θ̂ (with σ̂² = r²/d, d = n - p for REML, n for ML):

    Var(β̂) = σ̂² (X'V₀⁻¹X)⁻¹
    b̂ = Λû (conditional modes), Var(b | y, β̂) = σ̂² Λ (Λ'Z'WZΛ + I)⁻¹ Λ'  (lme4's condVar)
    AIC = -2ℓ + 2k,  BIC = -2ℓ + k log n,  k = p + dim(θ) + 1

where ℓ is the log-likelihood for ML fits and the restricted log-likelihood for REML
fits (lme4's `logLik`).
"""

from __future__ import annotations

from functools import cached_property, partial

import jax
import numpy as np
import pandas as pd

from .arrays import ModelArrays, ModelShape, relative_factors, to_device, to_host
from .known_covariance import report_arrays
from .blocked import blocked_summaries, cross_products
from .conditioning import conditioned, user_xtvx_inverse
from .exported_programs import cached_call
from .model import fit_arrays
from .newton import STATUS_MESSAGES
from .term_centring import centred_arrays, centred_theta, centring_maps, user_random_effects


@partial(jax.jit, static_argnames=("shape",))
def _post_fit(arrays: ModelArrays, shape: ModelShape, theta, beta, sigma2):
    """(X'V₀⁻¹X)⁻¹, `RandomEffects`, the fitted values Xβ̂ + Zb̂ and each term's ΛΛ' at the
    estimates (θ̂, β̂, σ̂²), from the terms' centred columns at θ̂_c (`term_centring.py`, as
    the fit) with the conditioned X and y (`conditioning.py`), mapped to the user's."""
    maps = centring_maps(arrays, shape)
    centred = centred_arrays(arrays, maps)
    theta_c = centred_theta(theta, maps, shape)
    data, rep = conditioned(centred)
    xtvx_inv_c, effects_c = blocked_summaries(theta_c, cross_products(data, shape), shape, sigma2)
    xtvx_inv = user_xtvx_inverse(xtvx_inv_c, rep)
    fitted = arrays.X @ beta
    for codes, values, modes in zip(centred.codes, centred.values, effects_c.modes):
        fitted = fitted + (values * modes[codes]).sum(axis=1)
    covariances = [lam @ lam.T for lam in relative_factors(theta, shape)]
    return xtvx_inv, user_random_effects(effects_c, maps), fitted, covariances


@partial(jax.jit, static_argnames=("shape",))
def fit_with_summaries(arrays: ModelArrays, shape: ModelShape, theta0):
    """(`fit_arrays`'s `FitParams`, `_post_fit`'s summaries at its estimates): a whole
    `Model.fit` as one program, so a fit is one call and one copy back to the host instead
    of two of each with the estimates copied to the device between them."""
    params = fit_arrays(arrays, shape, theta0)
    return params, _post_fit(arrays, shape, params.theta, params.beta, params.sigma2)


class FitResult:
    """A fitted linear mixed model (lme4's `merMod`)."""

    def __init__(self, model, params, post_fit=None):
        """`post_fit`: `_post_fit`'s values at `params` on the host (`fit_with_summaries`),
        or None to compute them here."""
        self.model = model
        self.design = model.design
        self.params = params
        self.method = model.method
        self.theta = np.asarray(params.theta) + 0.0  # no negative zeros
        self.sigma = float(np.sqrt(params.sigma2))
        post_fit = to_host(self._post_fit_values()) if post_fit is None else post_fit
        xtvx_inv, effects, fitted, rel_cov = post_fit
        self._vcov_values = params.sigma2 * np.asarray(xtvx_inv)  # σ̂² (X'V₀⁻¹X)⁻¹
        self.fitted = np.asarray(fitted)
        self.residuals = self.design.y - self.fitted
        self.report_terms = tuple(term.reported for term in self.design.terms)
        self._modes, self._cond_cov, self._rel_cov = report_arrays(
            self.design.terms, [np.asarray(m) for m in effects.modes],
            [np.asarray(c) for c in effects.cond_cov], [np.asarray(c) for c in rel_cov])
        self._small_sample = None

    # The pandas summaries are built when first read, not with every fit (the three of them
    # cost ~0.1 ms of a warm sleepstudy fit, ~0.3 ms amid the fit's other work).
    @cached_property
    def fixef(self) -> pd.Series:
        """β̂ by fixed-effect name."""
        return pd.Series(np.asarray(self.params.beta), index=list(self.design.fixed_names), name="estimate")

    @cached_property
    def vcov(self) -> pd.DataFrame:
        """Var(β̂) = σ̂² (X'V₀⁻¹X)⁻¹ (V₀ = V/σ² at θ̂), by fixed-effect name."""
        names = list(self.design.fixed_names)
        return pd.DataFrame(self._vcov_values, index=names, columns=names)

    @cached_property
    def se(self) -> pd.Series:
        """Standard errors of β̂: the square roots of vcov's diagonal."""
        return pd.Series(np.sqrt(np.diag(self._vcov_values)), index=list(self.design.fixed_names), name="se")

    correlation_parameters = None  # residual structures only (`residual_model.py`)
    small_sample_supported = True  # Satterthwaite/KR terms in to_dict (not yet with residual structures)
    variance_function = None

    def _post_fit_values(self):
        """(X'V₀⁻¹X)⁻¹, `RandomEffects`, fitted values and each term's ΛΛ' at the estimates."""
        theta, beta, sigma2 = to_device((self.params.theta, self.params.beta, self.params.sigma2))
        args = dict(arrays=self.model.arrays, theta=theta, beta=beta, sigma2=sigma2)
        return cached_call(_post_fit, args, dict(shape=self.model.shape))

    # ----- scalar summaries -------------------------------------------------------
    @property
    def nobs(self) -> int:
        return self.design.nobs

    @property
    def converged(self) -> bool:
        """The optimiser converged and the optimum is certified (`convergence_checks`)."""
        return bool(int(self.params.status) <= 1) and not self.convergence_checks[0]

    @property
    def convergence_message(self) -> str:
        return "; ".join([STATUS_MESSAGES[int(self.params.status)]] + self.convergence_checks[0])

    @cached_property
    def convergence_checks(self) -> tuple[list[str], list[str]]:
        """(failures, warnings): the design's structural checks (`identifiability.py`) and, at
        a converged non-singular θ̂, lme4's checkConv on the criterion's gradient and Hessian
        (`convergence_check.py`). Failures make the fit not converged."""
        from .convergence_check import derivative_messages
        from .identifiability import identifiability_messages

        failures = identifiability_messages(self.design)
        if int(self.params.status) > 1 or self.singular:
            return failures, []
        derivative_failures, warnings = derivative_messages(self.model, self.theta)
        return failures + derivative_failures, warnings

    @property
    def singular(self) -> bool:
        return bool(self.params.singular)

    @property
    def objective(self) -> float:
        """-2ℓ (ML deviance) or -2ℓ_R (REML criterion)."""
        return float(self.params.objective)

    @property
    def loglik(self) -> float:
        return -0.5 * self.objective

    @property
    def df_model(self) -> int:
        """p + dim(θ) + 1 (σ²); without the 1 when the residual scale is known."""
        return self.design.n_fixed + len(self.theta) + (0 if self.model.shape.known_scale else 1)

    @property
    def aic(self) -> float:
        return self.objective + 2 * self.df_model

    @property
    def bic(self) -> float:
        return self.objective + np.log(self.nobs) * self.df_model

    @property
    def deviance(self) -> float | None:
        return self.objective if self.method == "ML" else None

    @property
    def reml_criterion(self) -> float | None:
        return self.objective if self.method == "REML" else None

    @property
    def ngroups(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for term in self.report_terms:
            out.setdefault(term.group, term.n_levels)
        return out

    # ----- variance components ----------------------------------------------------
    def varcorr(self) -> pd.DataFrame:
        """lme4's `as.data.frame(VarCorr(m))`: columns grp, var1, var2, vcov, sdcor; per term
        its variances (var2 None, sdcor the SD), then its covariances (lower triangle, column
        by column; sdcor the correlation cov_ij / (sd_i sd_j), NaN where an SD is 0), the
        residual last (var1 and var2 None)."""
        rows = []
        s2 = self.sigma ** 2
        for term, rel in zip(self.report_terms, self._rel_cov):
            cov = s2 * rel
            sd = np.sqrt(np.diag(cov))
            names = term.column_names
            for i in range(term.dim):
                rows.append((term.name, names[i], None, cov[i, i], sd[i]))
            for j in range(term.dim):
                for i in range(j + 1, term.dim):
                    denom = sd[i] * sd[j]
                    rows.append((term.name, names[j], names[i], cov[i, j],
                                 cov[i, j] / denom if denom > 0 else np.nan))
        rows.append(("Residual", None, None, s2, self.sigma))
        frame = pd.DataFrame(rows, columns=["grp", "var1", "var2", "vcov", "sdcor"], dtype=object)
        return frame.astype({"vcov": float, "sdcor": float})

    def variance_components(self):
        """Variances and covariances (varcorr order, residual last) with SEs from the inverse
        expected and observed information on the variance scale (`information.py`)."""
        from .information import variance_components

        return variance_components(self)

    def fisher_information(self, kind: str = "expected"):
        """Information matrix of (β, variances/covariances), named (`information.py`)."""
        from .information import fisher_information

        return fisher_information(self, kind)

    def robust_vcov(self) -> dict:
        """Cluster-robust (sandwich) covariances of β̂ and of the variance components,
        clustered by the outermost grouping factor (`robust.py`)."""
        from .robust import robust_vcov

        return robust_vcov(self)
    def structure_parameters(self) -> list[dict]:
        """Per term: its structure keyword, θ̂ entries with names, derived values such as ρ."""
        from .structure_report import structure_parameters

        return structure_parameters(self)

    # ----- random effects ---------------------------------------------------------
    def ranef(self, cond_sd: bool = False) -> dict[str, pd.DataFrame]:
        """Conditional modes per grouping factor (levels x terms), as lme4's `ranef`; with
        `cond_sd=True` the conditional standard deviations instead."""
        out: dict[str, list] = {}
        for term, modes, cov in zip(self.report_terms, self._modes, self._cond_cov):
            values = np.sqrt(np.diagonal(cov, axis1=1, axis2=2)) if cond_sd else modes
            frame = pd.DataFrame(values, index=pd.Index(term.levels, name=term.group),
                                 columns=list(term.column_names))
            out.setdefault(term.group, []).append(frame)
        return {group: pd.concat(frames, axis=1) for group, frames in out.items()}

    def ranef_cov(self) -> dict[str, np.ndarray]:
        """Conditional covariances of the random effects, Var(b_l | y, β̂) = σ̂² Λ_k
        (Λ'Z'WZΛ + I)⁻¹_ll Λ_k' per level l of term k (lme4's postVar of
        ranef(m, condVar = TRUE), statsmodels' random_effects_cov): per term an array
        (levels x columns x columns), levels and columns in ranef()'s order (lme4's array is
        columns x columns x levels). Keyed by the term's varcorr() name: the grouping factor,
        "g.1", ... for a factor's further terms, whose covariances with the first term's are
        left out as lme4 leaves them out (its postVar is then a list, one array per term). The
        square roots of the diagonals are ranef(cond_sd=True)."""
        return {term.name: np.array(cov) for term, cov in zip(self.report_terms, self._cond_cov)}

    def influence(self) -> dict:
        """Influence of each observation (implicit-function-theorem derivatives at the fit):
        'dbeta_dy' (n x p, columns the fixed-effect names) and 'dtheta_dy' (n x k, columns θ's
        names as `fit_batch`'s theta_names: lme4's getME(m, "theta") names) DataFrames, and per
        level of the first random term's grouping factor 'group_deletion': the approximate
        change in β̂ when the level's rows are deleted (first-order θ change, exact GLS β̂ at
        it; `implicit.influence`)."""
        from .implicit import influence
        from .structure_report import theta_names

        out = jax.device_get(influence(self.model.arrays, self.model.shape, self.params))
        names = list(self.design.fixed_names)
        term = self.design.terms[0]
        deletion = np.asarray(out.group_deletion)
        theta = theta_names(self.design.terms)
        return {"dbeta_dy": pd.DataFrame(np.asarray(out.dbeta_dy).T, columns=names),
                "dtheta_dy": pd.DataFrame(np.asarray(out.dtheta_dy).T, columns=theta),
                "group_deletion": pd.DataFrame(deletion, columns=names,
                                               index=pd.Index(term.levels, name=term.group))}

    # ----- inference ----------------------------------------------------------------
    def confint(self, method: str = "profile", level: float = 0.95, nsim: int = 500,
                seed: int = 0, parm=None, progress: bool = True, boot_type: str = "perc"):
        """Confidence intervals as lme4's `confint(m, oldNames = FALSE)`: a DataFrame with
        columns lower, upper; method "profile", "wald" or "bootstrap" (`confint.py`)."""
        from .confint import confint

        return confint(self, method, level, nsim, seed, parm, progress, boot_type)

    # ----- small-sample inference for β ---------------------------------------------
    def small_sample_terms(self):
        """Satterthwaite's and Kenward-Roger's terms at the fit (`small_sample.py`), computed once."""
        if self._small_sample is None:
            from .small_sample import fit_terms

            self._small_sample = fit_terms(self)
        return self._small_sample

    def test(self, L, ddf: str = "Satterthwaite"):
        """F test of Lβ = 0 (L an array (q, p), a vector, or a dict of fixed-effect names)
        with Satterthwaite's or Kenward-Roger's df (lmerTest's `contest`): a float Series of
        F, num_df, den_df, F_scaling, p_value, named after the df method (`contrasts.py`)."""
        from .contrasts import contrast_test

        return contrast_test(self, L, ddf)

    def anova(self, ddf: str = "Satterthwaite", type=3):
        """lmerTest's ANOVA table of the fixed-effect terms, `anova(m, type, ddf)`: type 3
        (the default, marginal), 2 (car's marginality principle) or 1 (sequential), also
        spelt "I", "II", "III" (`contrasts.py`, `anova_types.py`)."""
        from .contrasts import anova_table

        return anova_table(self, ddf, type)

    # ----- prediction ---------------------------------------------------------------
    def predict(self, newdata=None, random_effects: bool = True) -> np.ndarray:
        """Predictions Xβ̂ (+ Zb̂ when `random_effects`); levels unseen in the fit get the
        population prediction (their random effects are 0). Without newdata: the fitted values.
        A value of a categorical fixed-effect factor the fit did not have (or outside
        `C(x, levels=[...])`) raises a DataError naming the column, as do missing values."""
        from .prediction import predict

        return predict(self, newdata, random_effects)

    # ----- export -------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain JSON-able data (see the README for the meaning of each key)."""
        from .export import result_to_dict

        return result_to_dict(self)

    def summary(self) -> str:
        """The text lme4's `summary()` prints."""
        from .summary import format_summary

        return format_summary(self)

    def __repr__(self) -> str:
        return self.summary()
