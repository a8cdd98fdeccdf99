"""Every ```python block of README.md runs as written: alone, in a fresh process, from an
empty folder, with this checkout's `lmm_jax` first on the path (slow: each block compiles
its own fits, 0.5-2 minutes a block on 2 cores). The fast set checks each block for names
it uses without defining or importing them, which is how the blocks used to fail."""

from __future__ import annotations

import builtins
import os
import re
import subprocess
import symtable
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(), flags=re.M | re.S)
blocks = pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i + 1}" for i in range(len(BLOCKS))])


def undefined_names(source: str) -> set[str]:
    """Global names the code reads (at top level or inside its functions) that it neither
    assigns, defines nor imports, and that are not builtins."""
    module = symtable.symtable(source, "<README block>", "exec")
    defined = {s.get_name() for s in module.get_symbols() if s.is_assigned() or s.is_imported()}
    read, tables = set(), [module]
    while tables:
        table = tables.pop()
        top = table is module
        read |= {s.get_name() for s in table.get_symbols() if s.is_referenced() and (top or s.is_global())}
        tables.extend(table.get_children())
    return read - defined - set(dir(builtins))


def test_the_readme_has_its_python_blocks():
    assert len(BLOCKS) >= 4
    assert undefined_names("import jax\ndef f(x):\n    return jnp.sum(x) + times\nf(newdata)") == \
        {"jnp", "times", "newdata"}


@blocks
def test_readme_block_defines_every_name_it_uses(block):
    assert not undefined_names(block), f"README block uses undefined names:\n{block}"


@pytest.mark.slow
@blocks
def test_readme_block_runs_alone(block, tmp_path):
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, env={**os.environ, "PYTHONPATH": path},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"README block failed:\n{block}\n{done.stderr[-4000:]}"
