"""Numerical configuration: lmm_jax computes in float64 unless a user asks for float32.

It also shortens OpenBLAS's idle spin, `OPENBLAS_THREAD_TIMEOUT` (unless the environment
sets it): JAX's CPU linear algebra (Cholesky, triangular solves, eigendecompositions) calls
LAPACK from scipy's OpenBLAS, whose worker threads by default spin for 2²⁸ cycles (~0.1 s)
after each call, holding a core that XLA's own threads then wait for. With 2¹⁶ cycles a
warm InstEval fit took 0.89-0.93 s against 1.14-1.18 s (2-core Intel Xeon, alternating
processes; benchmarks/RESULTS.md). OpenBLAS reads the variable when it is loaded, so it
takes effect when lmm_jax is imported before scipy's linear algebra is.
"""

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "16")

import jax  # noqa: E402  (after the OpenBLAS setting, which scipy's OpenBLAS reads on loading)

jax.config.update("jax_enable_x64", True)
