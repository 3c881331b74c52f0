"""cellseg keeps freed memory for reuse (glibc): a second large block is not page-faulted in again."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = r"""
import json, resource, sys
import numpy as np
from cellsegcli import allocator
kept = allocator.keep_freed_memory()
def faults_of_one_block():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = np.ones(64 * 2**20 // 8)        # 64 MB, written: every page touched
    del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
first = faults_of_one_block()
again = [faults_of_one_block() for _ in range(3)]
print(json.dumps({"kept": kept, "followed": allocator.kept(), "first": first, "again": min(again)}))
"""


def _probe(**env) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                         env={**os.environ, **env})
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_freed_blocks_are_reused_not_faulted_in_again():
    kept = _probe()
    if not kept["kept"]:
        pytest.skip("not glibc")
    assert kept["followed"]
    assert kept["first"] > 0                            # the first block is faulted in (pages of 4 KB or 2 MB)
    assert kept["again"] <= kept["first"] / 10          # later ones reuse it
    default = _probe(CELLSEG_MALLOC="default")
    assert not default["kept"] and not default["followed"]
    assert default["again"] >= default["first"] / 2    # glibc as it is: unmapped when freed, faulted in again
