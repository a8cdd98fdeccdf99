"""Command line: `lmm-jax fit DATA FORMULA [--method REML|ML] [--correlation S] [--weights S] [--json]`.

DATA is a CSV file or the name of a bundled data set (`lmm-jax datasets` lists them).
Compiled programs are kept in JAX's persistent compilation cache so that a second
process fitting a model of the same shape skips compilation; the cache lives in
$LMM_JAX_CACHE_DIR (default ~/.cache/lmm_jax), or --cache-dir, and `--no-cache` turns it off.
The command line is parsed by `lmm_jax_cli` (the console entry point, which imports no JAX);
input that cannot be fitted exits 2 with a message.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

from lmm_jax_cli import parser


def _enable_cache(args) -> None:
    from .compilation_cache import disable_compilation_cache, enable_compilation_cache

    if args.no_cache:
        disable_compilation_cache()
    elif args.cache_dir is not None:
        enable_compilation_cache(args.cache_dir)


def _load(data: str):
    """(frame, name) of a CSV file or a bundled data set; what cannot be read is a DataError."""
    import pandas as pd

    from . import datasets
    from .errors import DataError

    if data in datasets.names() and not Path(data).is_file():
        return datasets.load(data), data
    try:
        return pd.read_csv(data), Path(data).name
    except FileNotFoundError:
        raise DataError(f"{data!r} is neither a CSV file nor a bundled data set "
                        f"({', '.join(datasets.names())})") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"the CSV file {data!r} is empty: it needs a header line of column names "
                        "and rows of data") from None
    except (pd.errors.ParserError, UnicodeDecodeError, IsADirectoryError, PermissionError) as error:
        raise DataError(f"cannot read {data!r} as a CSV file: {error}") from None


def main(argv: list[str] | None = None) -> int:
    """The command `lmm-jax` with arguments `argv` (default: the process's); its exit code."""
    return execute(parser().parse_args(argv))


def execute(args) -> int:
    """Run a parsed command: 0, or 2 with a message on stderr for input that cannot be fitted."""
    from . import datasets

    if args.command == "datasets":
        for name in datasets.names():
            print(f"{name:12s} {datasets.describe(name)}")
        return 0
    _enable_cache(args)
    from .api import fit
    from .errors import DataError, plain_message
    from .formula import FormulaError

    try:
        frame, name = _load(args.data)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = fit(args.formula, frame, method=args.method, data_name=name,
                         correlation=args.correlation, weights=args.weights)
    except (DataError, FormulaError) as error:
        print(f"lmm-jax: {plain_message(error)}", file=sys.stderr)
        return 2
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.summary(), end="")
    return 0


def run() -> None:
    """`python -m lmm_jax.cli`: the `lmm-jax` command (`lmm_jax_cli.run`)."""
    from lmm_jax_cli import run as run_command

    run_command()


if __name__ == "__main__":
    run()
