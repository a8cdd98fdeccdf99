"""Convergence certified at θ̂, as lme4's `checkConv` (lme4 1.1-31), and structural checks of
identifiability made on the design before trusting an optimum.

At a converged, non-singular θ̂ with g and H the gradient and Hessian of the criterion
(-2ℓ or -2ℓ_R) w.r.t. θ (exact here, by autodiff or in closed form; lme4 takes finite
differences):

- scaled gradient: with H = R'R (R upper triangular), max_i min(|(R⁻¹g)_i|, |g_i|) ≤ 0.002,
  else "Model failed to converge with max|grad| = ..."; no R: "unable to evaluate scaled
  gradient";
- Hessian (tol 1e-6): an eigenvalue < -tol: "degenerate Hessian with k negative
  eigenvalues"; |eigenvalue| < tol: "Hessian is numerically singular: parameters are not
  uniquely determined"; else max(ev)·tol > 1: "very large eigenvalue", min/max < tol:
  "large eigenvalue ratio" (both "nearly unidentifiable").

The derivatives are taken where the fit optimised: θ_c on the terms' centred columns
(`term_centring.py`; lme4's θ itself where no term is centred). A covariate of large mean in
an unstructured term made lme4's θ a nearly unidentifiable parametrisation, whose Hessian
warned "very large eigenvalue" of an optimum that is well determined.

lme4 skips these for singular fits (its message is the singular one); so does this.
Failures of the first kind (codes < 0 in lme4) make the fit not converged; the
"nearly unidentifiable" ones are warnings.
"""

from __future__ import annotations

from functools import partial

import jax
import numpy as np

from .model import closed_form_derivatives, deviance_function, optimizer_hessian
from .term_centring import centred_arrays, centred_theta, centring_maps

GRADIENT_TOLERANCE = 2e-3  # lme4's check.conv.grad tol
HESSIAN_TOLERANCE = 1e-6  # lme4's check.conv.hess tol


@partial(jax.jit, static_argnames=("shape", "gradient_only"))
def criterion_derivatives(arrays, shape, theta, gradient_only: bool = False):
    """(gradient, Hessian) of the criterion in θ_c on the terms' centred columns, at the θ_c of
    the user's θ: closed form where `closed_form_derivatives` applies, else autodiff;
    `gradient_only`: (gradient, None)."""
    maps = centring_maps(arrays, shape)
    arrays, theta = centred_arrays(arrays, maps), centred_theta(theta, maps, shape)
    if gradient_only:
        return jax.grad(deviance_function(arrays, shape))(theta), None
    closed = closed_form_derivatives(arrays, shape)
    if closed is not None:
        return closed(theta)[1:]
    deviance = deviance_function(arrays, shape)
    return jax.grad(deviance)(theta), jax.hessian(deviance)(theta)


def derivative_messages(model, theta) -> tuple[list[str], list[str]]:
    """(failures, warnings): lme4's checkConv messages at θ̂ (module docstring). A model whose
    optimiser uses BFGS (`optimizer_hessian`: large crossed designs, where an exact Hessian
    costs ~10 gradients) is checked by its gradient alone."""
    theta = np.asarray(theta, float)
    if theta.size == 0:
        return [], []
    gradient, hessian = criterion_derivatives(model.arrays, model.shape, theta,
                                              optimizer_hessian(model.arrays, model.shape) == "bfgs")
    if hessian is None:
        return _gradient_messages(np.asarray(gradient), None), []
    gradient, hessian = np.asarray(gradient), np.asarray(hessian)
    return _gradient_messages(gradient, hessian) + _hessian_failures(hessian), _hessian_warnings(hessian)


def _gradient_messages(gradient: np.ndarray, hessian: np.ndarray | None) -> list[str]:
    if hessian is None:
        scaled = gradient
    else:
        try:
            scaled = np.linalg.solve(np.linalg.cholesky(hessian).T, gradient)
        except np.linalg.LinAlgError:
            return ["unable to evaluate scaled gradient"]
    smallest = np.minimum(np.abs(scaled), np.abs(gradient))
    if not np.all(np.isfinite(smallest)):
        return ["unable to evaluate scaled gradient"]
    if smallest.max() > GRADIENT_TOLERANCE:
        return [f"Model failed to converge with max|grad| = {smallest.max():.6g} "
                f"(tol = {GRADIENT_TOLERANCE:g}, component {int(np.argmax(smallest)) + 1})"]
    return []


def _eigenvalues(hessian: np.ndarray) -> np.ndarray | None:
    if not np.all(np.isfinite(hessian)):
        return None
    return np.linalg.eigvalsh(0.5 * (hessian + hessian.T))


def _hessian_failures(hessian: np.ndarray) -> list[str]:
    ev = _eigenvalues(hessian)
    if ev is None:
        return ["Problem with Hessian check (infinite or missing values?)"]
    negative = int(np.sum(ev < -HESSIAN_TOLERANCE))
    if negative:
        return [f"Model failed to converge: degenerate Hessian with {negative} negative eigenvalues"]
    if np.any(np.abs(ev) < HESSIAN_TOLERANCE):
        return ["Hessian is numerically singular: parameters are not uniquely determined"]
    return []


def _hessian_warnings(hessian: np.ndarray) -> list[str]:
    ev = _eigenvalues(hessian)
    if ev is None or np.any(ev < HESSIAN_TOLERANCE):
        return []
    out = []
    if ev.max() * HESSIAN_TOLERANCE > 1:
        out.append("Model is nearly unidentifiable: very large eigenvalue - Rescale variables?")
    if ev.min() / ev.max() < HESSIAN_TOLERANCE:
        out.append("Model is nearly unidentifiable: large eigenvalue ratio - Rescale variables?")
    return out
