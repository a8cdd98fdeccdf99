"""The `lmm-jax` command's entry point: it parses the command line before anything heavy is
imported, so that `lmm-jax --help` and a mistyped option answer in the time Python starts.

It lives outside the lmm_jax package because importing lmm_jax imports JAX (and switches it
to float64), pandas and formulaic, seconds on a small machine; `lmm_jax.cli` runs the command.
"""

from __future__ import annotations

import argparse
import os
import sys


def parser() -> argparse.ArgumentParser:
    """`lmm-jax fit DATA FORMULA [options]` and `lmm-jax datasets`."""
    top = argparse.ArgumentParser(prog="lmm-jax", description="Linear mixed models on JAX (lme4 formulas).")
    commands = top.add_subparsers(dest="command", required=True)
    fit = commands.add_parser("fit", help="fit a model and print lme4's summary (or JSON)")
    fit.add_argument("data", help="a CSV file, or the name of a bundled data set")
    fit.add_argument("formula", help="lme4 formula, e.g. 'Reaction ~ Days + (Days | Subject)'")
    fit.add_argument("--method", default="REML", type=str.upper, choices=["REML", "ML"],
                     help="REML (default) or ML, in any case")
    fit.add_argument("--correlation", default=None, help="residual correlation, e.g. 'ar1(~ 1 | Subject)'")
    fit.add_argument("--weights", default=None, help="variance function, e.g. 'ident(~ 1 | age)'")
    fit.add_argument("--json", action="store_true", help="print the result's to_dict() as JSON")
    fit.add_argument("--cache-dir", default=None, help="JAX compilation cache folder")
    fit.add_argument("--no-cache", action="store_true", help="do not use the compilation cache")
    commands.add_parser("datasets", help="list the bundled data sets")
    return top


def run() -> None:
    """The console entry point: parse, run the command (`lmm_jax.cli.execute`), then end the
    process as soon as its output is flushed. Python's own shutdown (tearing down jax's,
    pandas' and formulaic's modules and JAX's CPU client) took ~0.25 s of a ~1 s command;
    nothing is left to write by then (the stored programs and JAX's cache are written when
    compiled). Errors that stop parsing (`SystemExit`) exit the usual way."""
    args = parser().parse_args()
    from lmm_jax.cli import execute

    code = execute(args)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
