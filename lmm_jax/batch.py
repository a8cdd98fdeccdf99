"""`fit_batch`: one design, many responses (the per-gene case), fitted in one compiled program.

    result = lmm_jax.fit_batch("expr ~ Days + (Days | Subject)", data, responses=Y)
    result.to_frame()        # one row per response: beta[...], se[...], theta[...], sigma, ...

Each column of Y (n x B) replaces the formula's response in turn; X, Z and the prior
weights are built once. The fit of one response is `model.fit_arrays`, plus the standard
errors SE(β̂_j) = √(σ̂² [(X'V₀⁻¹X)⁻¹]_jj) from the same blocked factor. The B fits run as
`jax.lax.map(fit, Y', batch_size=batch_size)` inside one jit, over host-side chunks of at
most `chunk_size` responses (bounded memory; one progress-bar step per chunk). All chunks
have the same length (the last is padded with repeats of its last response, then cut),
so the program is compiled once; the chunk length is a multiple of the batch size, so
`lax.map` has no remainder group to compile either.

Why `lax.map` with a batch size and not one `vmap` over all B: jaxlib's CPU backend runs
batched LAPACK kernels on the thread pool they wait on, and a vmap over thousands of fits
was seen to hang (small_linalg.py); vmapped groups of 64 inside a sequential map did not.

Rows dropped from `data` for missing values in the design's columns are dropped from Y
too; a missing value left in Y is an error naming the column (a different row set would be
a different design).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from .arrays import ModelArrays, ModelShape
from .blocked import blocked_xtvx_inverse, cross_products
from .design import DataError, _as_frame
from .formula import parse_formula
from .model import Model, fit_arrays

CHUNK_SIZE = 2048  # responses per host-side chunk: bounds the memory of one compiled call


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

    def __len__(self) -> int:
        return len(self.names)

    def to_frame(self) -> pd.DataFrame:
        """One row per response: beta[name], se[name], theta[i], sigma, loglik, converged, singular."""
        columns = {}
        for j, name in enumerate(self.fixed_names):
            columns[f"beta[{name}]"] = self.beta[:, j]
        for j, name in enumerate(self.fixed_names):
            columns[f"se[{name}]"] = self.se[:, j]
        for i in range(self.theta.shape[1]):
            columns[f"theta[{i}]"] = self.theta[:, i]
        columns.update(sigma=self.sigma, loglik=self.loglik, converged=self.converged,
                       singular=self.singular)
        return pd.DataFrame(columns, index=pd.Index(self.names, name="response"))


def _fit_one_with_se(y, arrays: ModelArrays, shape: ModelShape, theta0):
    """`fit_arrays` for one response, plus SE(β̂) from (X'V₀⁻¹X)⁻¹ at θ̂."""
    arrays = dataclasses.replace(arrays, y=y)
    params = fit_arrays(arrays, shape, theta0)
    xtvx_inv = blocked_xtvx_inverse(params.theta, cross_products(arrays, shape), shape)
    return params, jnp.sqrt(params.sigma2 * jnp.diagonal(xtvx_inv))


@partial(jax.jit, static_argnames=("shape", "batch_size"))
def fit_responses(ys: jnp.ndarray, arrays: ModelArrays, shape: ModelShape, theta0: jnp.ndarray,
                  batch_size: int = 64):
    """(FitParams, se) for each row of ys (B, n): `lax.map` over vmapped groups of batch_size."""
    return jax.lax.map(partial(_fit_one_with_se, arrays=arrays, shape=shape, theta0=theta0),
                       ys, batch_size=batch_size)


def _responses(responses, data, design) -> tuple[np.ndarray, tuple]:
    """Y as a (B, n_kept) float array over the design's rows, and the response names."""
    if isinstance(responses, pd.Series):
        responses = responses.to_frame()
    if isinstance(responses, pd.DataFrame):
        names = tuple(responses.columns)
        values = responses.to_numpy(dtype=float)
    else:
        values = np.asarray(responses, dtype=float)
        if values.ndim == 1:
            values = values[:, None]
        names = tuple(range(values.shape[1])) if values.ndim == 2 else ()
    if values.ndim != 2 or values.shape[1] == 0:
        raise DataError(f"responses must be an (n, B) array or a DataFrame of B >= 1 columns, "
                        f"got shape {values.shape}")
    n_rows = len(_as_frame(data))
    if values.shape[0] != n_rows:
        raise DataError(f"responses must have one row per row of data ({n_rows}), got {values.shape[0]}")
    values = values[design.row_index.to_numpy()]  # positions: the design frame has a RangeIndex
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


def fit_batch(formula: str, data, responses, method: str = "REML", batch_size: int = 64,
              progress: bool = True, chunk_size: int = CHUNK_SIZE) -> BatchResult:
    """Fit `formula` to each column of `responses` (n x B) with the design built from `data`.

    >>> import numpy as np, lmm_jax
    >>> data = lmm_jax.datasets.load("sleepstudy")
    >>> Y = np.stack([data["Reaction"], 2 * data["Reaction"]], axis=1)
    >>> out = lmm_jax.fit_batch("Reaction ~ Days + (Days | Subject)", data, Y, progress=False)
    >>> np.round(out.beta[:, 1] / out.beta[0, 1], 6).tolist()
    [1.0, 2.0]

    `responses`: an (n, B) array or a DataFrame of B columns, one row per row of `data`
    (the formula's own response column, if present, is ignored). `batch_size`: fits
    vectorised together inside `lax.map`; `chunk_size`: responses per compiled call.
    """
    if batch_size < 1 or chunk_size < 1:
        raise ValueError("batch_size and chunk_size must be positive")
    model = Model.from_formula(formula, _design_frame(formula, data), method)
    ys, names = _responses(responses, data, model.design)
    n_resp = ys.shape[0]
    n_chunks = math.ceil(n_resp / chunk_size)
    batch_size = min(batch_size, math.ceil(n_resp / n_chunks))
    per_chunk = batch_size * math.ceil(n_resp / n_chunks / batch_size)  # no remainder group to compile
    padded = np.concatenate([ys, np.repeat(ys[-1:], n_chunks * per_chunk - n_resp, axis=0)])
    chunks = range(n_chunks)
    if progress and n_chunks > 1:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc="fit_batch", unit="chunk")
    theta0 = model.initial_theta()
    outputs = []
    for c in chunks:
        out = fit_responses(jnp.asarray(padded[c * per_chunk:(c + 1) * per_chunk]), model.arrays,
                            model.shape, theta0, batch_size=batch_size)
        outputs.append(jax.device_get(out))
    params, se = jax.tree_util.tree_map(lambda *parts: np.concatenate(parts)[:n_resp], *outputs)
    return BatchResult(names, tuple(model.design.fixed_names), model.method, params.beta, se,
                       params.theta, np.sqrt(params.sigma2), params.loglik, params.status <= 1,
                       params.singular, params.status, params.iterations)
