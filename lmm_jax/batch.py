"""`fit_batch`: one design, many responses (the per-gene case), fitted in one compiled program.

    result = lmm_jax.fit_batch("expr ~ Days + (Days | Subject)", data, responses=Y)
    result.to_frame()        # one row per response: beta[...], se[...], theta[...], sigma, ...
    lmm_jax.fit_batch(formula, datasets=[df1, df2, ...])   # one model, data sets of any sizes

Each column of Y (n x B) replaces the formula's response in turn; X, Z and the prior
weights are built once. The fit of one response is `model.fit_arrays`, plus the standard
errors SE(β̂_j) = √(σ̂² [(X'V₀⁻¹X)⁻¹]_jj) from the same blocked factor. The B fits run as
`jax.lax.map(fit, Y', batch_size=batch_size)` inside one jit, over host-side chunks of at
most `chunk_size` responses (bounded memory; a progress bar counts the fits). All chunks
have the same length (the last is padded with repeats of its last response, then cut),
so the program is compiled once (ahead of time, then reused); the chunk length is a
multiple of the batch size, so `lax.map` has no remainder group to compile either. On a
CPU the chunks run on one thread per core (`batch_runner.host_threads`).

Why `lax.map` with a small batch size and not one `vmap` over all B: a vmapped Newton loop
runs until its slowest member stops, so every member pays for the worst one's iterations;
groups of 16 waste least (64 and 256 were 1.3x and 1.9x slower per fit on sleepstudy-shaped
responses). Also, jaxlib's CPU backend runs batched LAPACK kernels on the thread pool they
wait on, and a vmap over thousands of fits was seen to hang (small_linalg.py).

Data sets of different sizes are padded into bucketed shapes (`ragged.py`); chunks are
split over all local devices (`sharding.py`); `dtype="float32"` runs in single precision
(`batch_runner.py`).

Rows dropped from `data` for missing values in the design's columns are dropped from Y
too; a missing value left in Y is an error naming the column (a different row set would be
a different design).
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from .arrays import ModelArrays, ModelShape
from .batch_runner import cast_floats, check_dtype, run_in_chunks
from .blocked import factors_unrolled
from .design import DataError, _as_frame
from .formula import parse_formula
from .input_checks import aligned_to_rows, float_values
from .model import Model, _is_reml, fit_arrays_with_xtvx_inverse
from .newton import EXACT_FIT, STATUS_MESSAGES
from .ragged import bucket_key, dataset_designs, group_by_bucket, padded_shape, stacked_arrays
from .sharding import batch_mesh, sharded_map
from .structure_report import theta_names

CHUNK_SIZE = 2048  # responses per host-side chunk: bounds the memory of one compiled call
BATCH_SIZE = 16  # fits vectorised together (see the module docstring)
# XLA:CPU's older loop emitters: the batched fit compiles in 2.8 s instead of 4.0 s and runs
# ~20% faster (sleepstudy-shaped fits, jaxlib 0.10.2); GPU compilers ignore the option
BATCH_COMPILER_OPTIONS = {"xla_cpu_use_fusion_emitters": False}


@dataclass(frozen=True)
class BatchResult:
    """Per-response estimates of B fits sharing one design (arrays with B rows)."""

    names: tuple            # response names (Y's columns, or 0..B-1)
    fixed_names: tuple[str, ...]
    method: str
    beta: np.ndarray        # (B, p)
    se: np.ndarray          # (B, p): √(σ̂² diag (X'V₀⁻¹X)⁻¹)
    theta: np.ndarray       # (B, k), canonical form
    sigma: np.ndarray       # (B,)
    loglik: np.ndarray      # (B,): restricted log-likelihood for REML, log-likelihood for ML
    converged: np.ndarray   # (B,) bool
    singular: np.ndarray    # (B,) bool
    status: np.ndarray      # (B,) newton status codes (newton.STATUS_MESSAGES)
    iterations: np.ndarray  # (B,)
    theta_names: tuple[str, ...] = ()  # lme4's names of θ's entries (`structure_report.theta_names`)

    def __len__(self) -> int:
        return len(self.names)

    def to_frame(self) -> pd.DataFrame:
        """One row per response: beta[name], se[name], theta[name] (lme4's θ names, e.g.
        theta[Subject.Days.(Intercept)]), sigma, loglik, converged, singular."""
        columns = {}
        for j, name in enumerate(self.fixed_names):
            columns[f"beta[{name}]"] = self.beta[:, j]
        for j, name in enumerate(self.fixed_names):
            columns[f"se[{name}]"] = self.se[:, j]
        names = self.theta_names or tuple(map(str, range(self.theta.shape[1])))
        for i, name in enumerate(names):
            columns[f"theta[{name}]"] = self.theta[:, i]
        columns.update(sigma=self.sigma, loglik=self.loglik, converged=self.converged,
                       singular=self.singular)
        return pd.DataFrame(columns, index=pd.Index(self.names, name="response"))

    def __repr__(self) -> str:
        """A summary, not the arrays (1,000 fits printed 59,263 characters): the number of
        fits, converged and singular counts, the count of each optimiser status, the
        parameter names, and `to_frame()` cut to its first and last rows, as pandas cuts it."""
        statuses = pd.Series(self.status).map(lambda code: STATUS_MESSAGES[int(code)]).value_counts()
        lines = [f"BatchResult: {len(self)} {self.method} fits, {int(np.sum(self.converged))} converged, "
                 f"{int(np.sum(self.singular))} singular",
                 *(f"  {count} {message}" for message, count in statuses.items()),
                 f"fixed effects: {', '.join(self.fixed_names)}",
                 f"theta: {', '.join(self.theta_names or map(str, range(self.theta.shape[1])))}",
                 self.to_frame().to_string(max_rows=6, max_cols=8, float_format="{:.6g}".format)]
        return "\n".join(lines)


def _fit_with_se(arrays: ModelArrays, shape: ModelShape, theta0):
    """`fit_arrays`, plus SE(β̂) from (X'V₀⁻¹X)⁻¹ at θ̂ (the same factor as β̂'s)."""
    params, xtvx_inv = fit_arrays_with_xtvx_inverse(arrays, shape, theta0)
    return params, jnp.sqrt(params.sigma2 * jnp.diagonal(xtvx_inv))


@partial(jax.jit, static_argnames=("shape", "batch_size", "mesh"), compiler_options=BATCH_COMPILER_OPTIONS)
def fit_responses(items: jnp.ndarray, arrays: ModelArrays, shape: ModelShape, theta0: jnp.ndarray,
                  batch_size: int = BATCH_SIZE, mesh=None):
    """(FitParams, se) for each row of `items`, responses (B, n): `lax.map` over vmapped
    groups of batch_size, split over the devices of `mesh` (`sharding.py`)."""
    def fit_one(y, consts):
        arrays, theta0 = consts
        return _fit_with_se(dataclasses.replace(arrays, y=y), shape, theta0)
    return sharded_map(fit_one, items, (arrays, theta0), batch_size, mesh)


@partial(jax.jit, static_argnames=("shape", "batch_size", "mesh"), compiler_options=BATCH_COMPILER_OPTIONS)
def fit_stacked(items: ModelArrays, shape: ModelShape, theta0: jnp.ndarray, batch_size: int = BATCH_SIZE,
                mesh=None):
    """(FitParams, se) for each data set of `items`, a stack of padded arrays (`ragged.py`)."""
    return sharded_map(lambda arrays, theta0: _fit_with_se(arrays, shape, theta0), items, theta0,
                       batch_size, mesh)


def _responses(responses, data, design) -> tuple[np.ndarray, tuple]:
    """Y as a (B, n_kept) float array over the design's rows, and the response names."""
    if isinstance(responses, pd.Series):
        responses = responses.to_frame()
    if isinstance(responses, pd.DataFrame):
        responses = aligned_to_rows(responses, data, "responses DataFrame")
        names = tuple(responses.columns)
        values = np.column_stack([float_values(responses[name], f"responses column {name!r}")
                                  for name in names]) if names else np.zeros((len(responses), 0))
    else:
        values = float_values(responses, "responses")
        if values.ndim == 1:
            values = values[:, None]
        names = tuple(range(values.shape[1])) if values.ndim == 2 else ()
    if values.ndim != 2 or values.shape[1] == 0:
        raise DataError(f"responses must be an (n, B) array or a DataFrame of B >= 1 columns, "
                        f"got shape {values.shape}")
    n_rows = len(_as_frame(data))
    if values.shape[0] != n_rows:
        raise DataError(f"responses must have one row per row of data ({n_rows}), got {values.shape[0]}")
    values = values[design.row_positions]
    bad = ~np.all(np.isfinite(values), axis=0)
    if bad.any():
        raise DataError(f"responses have missing or non-finite values in column(s) "
                        f"{', '.join(map(repr, np.asarray(names, dtype=object)[bad][:5]))} "
                        "(in rows that the design keeps); fit those separately")
    return values.T, names


def _design_frame(formula: str, data) -> pd.DataFrame:
    """`data` with the formula's response column set to a placeholder (Y supplies it)."""
    response = parse_formula(formula).response
    if not response.isidentifier():
        raise DataError(f"fit_batch needs the response to be a plain column name, got {response!r}; "
                        "transform the responses before passing them")
    return _as_frame(data).reset_index(drop=True).assign(**{response: 0.0})


def fit_batch(formula: str, data=None, responses=None, method: str = "REML", batch_size: int = BATCH_SIZE,
              progress: bool = True, chunk_size: int = CHUNK_SIZE, *, datasets=None,
              dtype: str = "float64", devices=None) -> BatchResult:
    """Fit `formula` to each column of `responses` (n x B) with the design built from `data`,
    or to each data set of `datasets`.

    >>> import numpy as np, lmm_jax
    >>> data = lmm_jax.datasets.load("sleepstudy")
    >>> Y = np.stack([data["Reaction"], 2 * data["Reaction"]], axis=1)
    >>> out = lmm_jax.fit_batch("Reaction ~ Days + (Days | Subject)", data, Y, progress=False)
    >>> np.round(out.beta[:, 1] / out.beta[0, 1], 6).tolist()
    [1.0, 2.0]

    `responses`: an (n, B) array or a DataFrame of B columns, one row per row of `data`
    (the formula's own response column, if present, is ignored). `batch_size`: fits
    vectorised together inside `lax.map`; `chunk_size`: responses per compiled call.

    `datasets`: instead of data and responses, a list (or dict name -> frame) of data
    sets, each with its own rows and factor levels, fitted with the same formula; entry i
    equals `lmm_jax.fit(formula, datasets[i])`. They are padded to bucketed shapes
    (`ragged.py`), so data sets of similar size share one compiled program. Every data set
    must give the same fixed-effect columns; θ follows the first data set's term order
    (which may not be another data set's own: compare by `theta_names`).

    Each response is fitted on its residuals from its float64 least-squares fit
    (`Design.least_squares_residuals`) and b₀ added back to β̂: θ̂, σ̂, SE and the likelihood
    are exactly those of the response (`conditioning.py`), without the digits a response of
    large mean cancels. `dtype`: "float64" (default) or "float32" (single precision
    throughout; results in float32). Against float64 on 1,000 sleepstudy-shaped simulated responses
    (benchmarks/bench_float32.py, 2026-12-06) the largest relative errors were: β̂ 3e-6,
    log-likelihood 2e-5, σ̂ 3e-3, SE(β̂) 3e-2; θ̂ (entries > 0.05) 3e-3 at the 99th
    percentile but up to 0.9 in nearly singular fits, whose flat likelihood float32 cannot
    resolve; 1 of 1,000 fits differed in the singular flag. tests/test_batch_float32.py
    asserts bounds (β̂ 1e-3, log-likelihood 1e-4, σ̂ 1e-2, SE 1e-1, θ̂ 1) and that a
    response shifted by 1e4 gives the same fits.
    A response that the fixed effects fit exactly (a constant, y = Xb) has no optimum: its
    β̂ is the least-squares fit, θ̂, σ̂, SE and log-likelihood are NaN, `converged` False
    (status `newton.EXACT_FIT`), with a warning.
    `devices`: the devices to split the batch over (default: all local devices; one
    device runs unsharded).
    """
    dtype = check_dtype(dtype)
    mesh = batch_mesh(devices)
    if datasets is not None:
        if data is not None or responses is not None:
            raise ValueError("give either data and responses, or datasets, not both")
        return _fit_datasets(formula, datasets, method, batch_size, progress, chunk_size, dtype, mesh)
    if data is None or responses is None:
        raise ValueError("fit_batch needs data and responses (one design, B responses) or datasets=")
    model = Model.from_formula(formula, _design_frame(formula, data), method)
    ys, names = _responses(responses, data, model.design)
    residuals, coefficients = model.design.least_squares_residuals(ys)
    exact = model.design.exactly_fitted(ys, residuals)
    ys, shift = residuals, coefficients  # a response of large mean keeps its digits (float32 too)
    arrays, theta0 = cast_floats(model.arrays, dtype), model.shape.initial_theta()
    consts = dict(arrays=arrays, theta0=np.asarray(theta0, dtype))
    params, se = run_in_chunks(fit_responses, ys, consts, dict(shape=model.shape), batch_size=batch_size,
                               chunk_size=chunk_size, mesh=mesh, dtype=dtype, progress=progress,
                               compiler_options=BATCH_COMPILER_OPTIONS,
                               concurrent=factors_unrolled(model.shape, model.design.n_fixed))
    beta = (params.beta + shift).astype(params.beta.dtype)
    params, se = _mark_exact_fits(exact, coefficients[exact], params._replace(beta=beta), se)
    return _result(names, model.design, model.method, params, se)


def _mark_exact_fits(exact: np.ndarray, exact_coefficients: np.ndarray, params, se):
    """Responses the fixed effects fit exactly (`Design.exactly_fitted`: a constant, y = Xb)
    have no optimum (the criterion falls without bound as σ² -> 0, and the fit stopped
    anywhere, differently for other batch sizes): β̂ is their least-squares fit
    (`exact_coefficients`, one row per exact entry), θ̂, σ̂², SE and the log-likelihood
    NaN, status `EXACT_FIT` (not converged), with a warning."""
    if not exact.any():
        return params, se
    warnings.warn(f"{int(exact.sum())} response(s) are fitted exactly by the fixed effects (zero residuals: "
                  "a constant, or y = Xb); their theta, sigma, se and loglik are NaN and converged is False",
                  stacklevel=3)
    nan = np.nan

    def where_exact(a, value):
        a = np.array(a, copy=True)
        a[exact] = value
        return a

    params = params._replace(
        beta=where_exact(params.beta, exact_coefficients.astype(params.beta.dtype)), theta=where_exact(params.theta, nan),
        sigma2=where_exact(params.sigma2, nan), loglik=where_exact(params.loglik, nan),
        objective=where_exact(params.objective, nan), singular=where_exact(params.singular, False),
        status=where_exact(params.status, EXACT_FIT))
    return params, where_exact(se, nan)


def _fit_datasets(formula, datasets, method, batch_size, progress, chunk_size, dtype, mesh):
    """The `datasets=` path: one `run_in_chunks` per bucket of padded shapes."""
    method = "REML" if _is_reml(method) else "ML"
    names, designs = dataset_designs(formula, datasets)
    fits = [design.least_squares_residuals(design.y[None, :]) for design in designs]  # (residuals, b₀)
    exact = np.array([design.exactly_fitted(design.y[None, :], residuals)[0]
                      for design, (residuals, _) in zip(designs, fits)])
    coefficients = np.concatenate([coef for _, coef in fits])
    designs = [dataclasses.replace(design, y=residuals[0]) for design, (residuals, _) in zip(designs, fits)]
    shifts = coefficients  # as in fit_batch, data set by data set
    theta0 = padded_shape(designs[0], bucket_key(designs[0]), method).initial_theta()
    results = [None] * len(designs)
    for key, members in group_by_bucket(designs).items():
        shape = padded_shape(designs[0], key, method)
        out = run_in_chunks(fit_stacked, stacked_arrays([designs[i] for i in members], key),
                            dict(theta0=np.asarray(theta0, dtype)), dict(shape=shape), batch_size=batch_size,
                            chunk_size=chunk_size, mesh=mesh, dtype=dtype, progress=progress,
                            desc=f"fit_batch n={key[0]}", compiler_options=BATCH_COMPILER_OPTIONS,
                            concurrent=factors_unrolled(shape, designs[0].n_fixed))
        for j, i in enumerate(members):
            results[i] = jax.tree_util.tree_map(lambda a, j=j: a[j], out)
    params, se = jax.tree_util.tree_map(lambda *parts: np.stack(parts), *results)
    beta = (params.beta + shifts).astype(params.beta.dtype)
    params, se = _mark_exact_fits(exact, coefficients[exact], params._replace(beta=beta), se)
    return _result(names, designs[0], method, params, se)


def _result(names, design, method, params, se) -> BatchResult:
    return BatchResult(names, tuple(design.fixed_names), method, params.beta, se, params.theta,
                       np.sqrt(params.sigma2), params.loglik, params.status <= 1, params.singular,
                       params.status, params.iterations, tuple(theta_names(design.terms)))
