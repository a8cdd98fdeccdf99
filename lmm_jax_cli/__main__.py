"""`python -m lmm_jax_cli` is the `lmm-jax` command."""

from lmm_jax_cli import run

run()
