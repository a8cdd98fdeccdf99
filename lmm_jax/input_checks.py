"""Checks of input columns that give a clear `DataError` naming the column, where numpy or
pandas would fail with a message about arrays (or, worse, accept text as numbers).

- `float_values`: a numeric column or array as floats; text, categories or dates are refused
  ('1.5' held as text is not read as 1.5, and 'a' gives no raw conversion error);
- `check_unique_columns`: a used column name that appears twice in the data;
- `check_value_types`: complex numbers (whose imaginary part a float cast drops) and
  containers (lists, arrays, dicts) in a column;
- `check_magnitude`: values whose squares overflow or underflow float64 (|v| > 1e150 or
  0 < max |v| < 1e-150), where sums of squares (y'y, X'X) lose everything;
- `aligned_to_rows`: a pandas object matched to data's rows by index label, as pandas aligns.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .errors import DataError

LARGEST_MAGNITUDE = 1e150  # squares up to 1e300 stay below float64's largest value, 1.8e308


def float_values(values, what: str) -> np.ndarray:
    """`values` (a Series or array) as a new float array; a non-numeric dtype is an error
    naming `what` ("weights column 'w'")."""
    dtype = values.dtype if hasattr(values, "dtype") else np.asarray(values).dtype
    if not pd.api.types.is_numeric_dtype(dtype):
        kind = "text" if dtype == object or pd.api.types.is_string_dtype(dtype) else "not numeric"
        raise DataError(f"{what} is {kind} ({dtype} dtype); convert it to numbers")
    if isinstance(values, pd.Series):
        return values.to_numpy(dtype=float, na_value=np.nan)
    return np.array(values, dtype=float)


def check_unique_columns(frame: pd.DataFrame, names) -> None:
    """A clear error when a column the model reads appears more than once in `frame`."""
    repeated = frame.columns[frame.columns.duplicated()]
    clashes = [name for name in names if name in set(repeated)]
    if clashes:
        counts = ", ".join(f"{name!r} ({int((frame.columns == name).sum())} times)" for name in clashes)
        raise DataError(f"data has repeated column names: {counts}; each column the model reads must "
                        "have a unique name")


def check_value_types(frame: pd.DataFrame, names) -> None:
    """A clear error for a used column of complex numbers or of containers (lists, tuples,
    dicts, sets, arrays): neither is a number or a level of a factor."""
    for name in names:
        values = frame[name].to_numpy()
        if values.dtype.kind == "c":
            raise DataError(f"column {name!r} holds complex numbers; a model reads real numbers or levels")
        if values.dtype == object and pd.api.types.infer_dtype(values, skipna=True) == "mixed":
            container = next((v for v in values if isinstance(v, (list, tuple, dict, set, np.ndarray))), None)
            if container is not None:
                raise DataError(f"column {name!r} holds {type(container).__name__}s (such as {container!r}); "
                                "each value must be a number or a level")


def check_magnitude(values: np.ndarray, what: str) -> None:
    """A clear error when the largest |value| is above 1e150 or below 1e-150 (but not 0): the
    squares the fit sums overflow or underflow float64. Rescaling the column fixes it."""
    scale = float(np.max(np.abs(values))) if values.size else 0.0
    if scale > LARGEST_MAGNITUDE or 0 < scale < 1 / LARGEST_MAGNITUDE:
        size = "too large" if scale > 1 else "too small"
        flow = "overflow" if scale > 1 else "underflow"
        raise DataError(f"{what} has values {size} for float64 (largest magnitude {scale:.3g}): their "
                        f"squares {flow}; rescale it (divide or multiply by a power of 10)")


def aligned_to_rows(values: pd.Series | pd.DataFrame, data, what: str):
    """`values` matched to `data`'s rows by index label, as pandas aligns (matched by position,
    a shuffled copy would be silently another input); an index that is not a reordering of
    `data`'s is an error. `data` not a DataFrame: `values` as they are."""
    if not isinstance(data, pd.DataFrame) or values.index.equals(data.index):
        return values
    if data.index.is_unique and values.index.is_unique and len(values.index) == len(data.index) \
            and values.index.isin(data.index).all():
        return values.reindex(data.index)
    raise DataError(f"the index of the {what} is not a reordering of data's index, so its rows cannot be "
                    f"matched to data's; pass its .to_numpy() to match them by position")
