"""fit_batch's progress bar (`batch_runner.run_in_chunks`): it counted chunks (0/2, then 2/2)
and said nothing through the seconds of compilation."""

from __future__ import annotations

import re
from functools import partial

import jax
import numpy as np

from lmm_jax.batch_runner import run_in_chunks


@partial(jax.jit, static_argnames=("batch_size", "mesh"))
def _doubled(items, batch_size, mesh):
    return jax.lax.map(lambda y: 2.0 * y, items, batch_size=batch_size)


def test_progress_bar_counts_fits_and_says_compiling(capsys):
    items = np.arange(10.0)
    out = run_in_chunks(_doubled, items, {}, {}, batch_size=1, chunk_size=4, progress=True, desc="fit_batch")
    np.testing.assert_array_equal(out, 2.0 * items)
    err = capsys.readouterr().err
    states = [s.strip() for s in err.replace("\n", "\r").split("\r") if s.strip()]
    assert "0/10" in states[0] and "compiling" in states[0] and "fit/s" in states[0]
    assert "10/10" in states[-1] and "compiling" not in states[-1]
    counts = [int(re.search(r"\| *(\d+)/10 \[", s).group(1)) for s in states]  # of 10 fits, not chunks
    assert counts[-1] == 10 and counts == sorted(counts) and len(states) >= 2
