"""Predictions for new data: Xβ̂ + Σ_k Z_k b̂_k, with b̂ = 0 for levels not seen in the fit."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .design import DataError, row_labels


def predict(result, newdata=None, random_effects: bool = True) -> np.ndarray:
    """See `FitResult.predict`."""
    design = result.design
    if newdata is None:
        return result.fitted.copy() if random_effects else design.X @ result.fixef.to_numpy()
    frame = newdata if isinstance(newdata, pd.DataFrame) else pd.DataFrame(dict(newdata))
    X = _matrix(design.fixed_spec, frame, "fixed part")
    names = [("(Intercept)" if c == "Intercept" else c) for c in X.columns]
    keep = [names.index(n) for n in design.fixed_names]
    out = np.asarray(X, dtype=float)[:, keep] @ result.fixef.to_numpy()
    if not random_effects:
        return out
    for term, modes in zip(result.report_terms, result._modes):
        missing = [f for f in term.spec.factors if f not in frame.columns]
        if missing:
            raise DataError(f"newdata lacks grouping column(s) {missing} of random term {term.spec.source!r}; "
                            "pass random_effects=False for population predictions")
        values = np.asarray(_matrix(term.model_spec, frame, f"random term {term.spec.source!r}"), dtype=float)
        position = {label: i for i, label in enumerate(term.levels)}
        index = np.array([position.get(label, -1) for label in row_labels(frame, term.spec.factors)])
        effects = np.where((index >= 0)[:, None], modes[np.maximum(index, 0)], 0.0)
        out = out + np.sum(values * effects, axis=1)
    return out


def _matrix(model_spec, frame: pd.DataFrame, where: str):
    try:
        return model_spec.get_model_matrix(frame, na_action="raise")
    except Exception as error:
        raise DataError(f"cannot build the {where} for newdata: {error}") from None
