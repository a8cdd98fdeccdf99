"""Per-term structure parameters of a fit, and their standard errors from the exact Hessian.

`structure_parameters(result)` lists, per random term, its structure keyword, the names
and values of its entries of θ̂, and the structure's interpretable parameters (ρ for cs and
ar1, the lag correlations of toep). `structure_parameter_se(result)` gives asymptotic
standard errors of θ̂ from the exact Hessian of the criterion D(θ) = -2ℓ (or -2ℓ_R) with
σ² profiled out:

    Var(θ̂) ≈ 2 H⁻¹,   H = ∇²_θ D(θ̂)   (D = -2ℓ, so the observed information is H/2),

and of any derived parameter g(θ) by the delta method, Var(g) ≈ ∇g' Var(θ̂) ∇g.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def theta_names(terms) -> list[str]:
    """A name per entry of θ, "group.parameter" (lme4's `names(getME(m, "theta"))` for its
    unstructured terms: "Subject.(Intercept)", "Subject.Days.(Intercept)", "Subject.Days");
    where two terms on one factor would repeat a name, the term's VarCorr name ("Subject.1")
    takes the group's place."""
    def names(label):
        return [f"{label(term)}.{name}" for term in terms
                for name in term.structure.parameter_names(term.column_names)]
    by_group = names(lambda term: term.group)
    return by_group if len(set(by_group)) == len(by_group) else names(lambda term: term.name)


def structure_parameters(result) -> list[dict]:
    """Per term: group, structure keyword, theta names and values, derived parameters."""
    out = []
    for term, sl in zip(result.design.terms, result.model.shape.theta_slices()):
        structure = term.structure
        theta = result.theta[sl]
        out.append({"group": term.name, "structure": structure.keyword,
                    "theta_names": list(structure.parameter_names(term.column_names)),
                    "theta": [float(v) for v in theta],
                    "derived": structure.derived_parameters(theta)})
    return out


def summary_lines(result) -> str:
    """'batch: cs, rho = 0.164' lines for terms with derived parameters (for `summary()`)."""
    lines = []
    for entry in structure_parameters(result):
        if entry["derived"]:
            values = ", ".join(f"{name} = {value:.4g}" for name, value in entry["derived"].items())
            lines.append(f" {entry['group']}: {entry['structure']}, {values}")
    return "Structure parameters:\n" + "\n".join(lines) + "\n" if lines else ""


def theta_covariance(result) -> np.ndarray:
    """2 H⁻¹ with H the exact Hessian of the fit's criterion at θ̂ (see the module docstring)."""
    from .model import deviance_function

    if hasattr(result.model, "residual_shape"):
        raise NotImplementedError("structure_parameter_se with residual structures (correlation= or a "
                                  "weights= variance function) is not implemented: its Hessian would be "
                                  "of the model without them")

    model = result.model
    hessian = jax.jit(jax.hessian(deviance_function(model.arrays, model.shape)))(jnp.asarray(result.theta))
    return 2.0 * np.linalg.inv(np.asarray(hessian))


def structure_parameter_se(result, function=None) -> dict:
    """Standard errors of θ̂ (name -> SE), or, with `function` (θ -> vector of g(θ)), the
    estimates and delta-method SEs of g(θ̂): {'estimate': g(θ̂), 'se': ..., 'cov': ...}.

    A singular fit (a θ entry on its boundary) has no valid Hessian-based SE for that entry.
    """
    cov = theta_covariance(result)
    if function is None:
        return dict(zip(theta_names(result.design.terms), np.sqrt(np.diag(cov))))
    theta = jnp.asarray(result.theta)
    jacobian = np.atleast_2d(np.asarray(jax.jacobian(lambda t: jnp.atleast_1d(function(t)))(theta)))
    derived_cov = jacobian @ cov @ jacobian.T
    return {"estimate": np.atleast_1d(np.asarray(function(theta))),
            "se": np.sqrt(np.diag(derived_cov)), "cov": derived_cov}
