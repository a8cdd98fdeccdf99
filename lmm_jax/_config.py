"""Numerical configuration: lmm_jax computes in float64 unless a user asks for float32."""

import jax

jax.config.update("jax_enable_x64", True)
