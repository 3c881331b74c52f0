"""A bounded fuzz test of the readers: mutated TIFF bytes (fixed seed) through ``open_stack`` and every
frame read may only end in a valid read or the tool's own one-line error, with nothing printed."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
import tifffile

from cellsegcli.errors import CellsegError
from cellsegcli.io.readers import open_stack

CASES = 300


def _originals() -> list[bytes]:
    rng = np.random.default_rng(0)
    stack = (rng.random((3, 24, 20)) * 60000).astype(np.uint16)
    out = []
    for kwargs in ({"imagej": True, "metadata": {"axes": "TYX"}},
                   {"ome": True, "metadata": {"axes": "TYX", "PhysicalSizeX": 0.5}},
                   {"photometric": "minisblack", "compression": "zlib", "tile": (16, 16)},
                   {"photometric": "minisblack", "rowsperstrip": 4}):
        buf = io.BytesIO()
        tifffile.imwrite(buf, stack, **kwargs)
        out.append(buf.getvalue())
    return out


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(data)
    how = rng.integers(4)
    if how == 0:       # a few random bytes changed, mostly in the header and IFDs where they matter
        for _ in range(rng.integers(1, 9)):
            i = int(rng.integers(min(len(b), 512))) if rng.random() < 0.7 else int(rng.integers(len(b)))
            b[i] = int(rng.integers(256))
    elif how == 1:     # truncated
        b = b[: int(rng.integers(1, len(b)))]
    elif how == 2:     # a block overwritten with noise
        i = int(rng.integers(len(b)))
        n = int(rng.integers(1, 64))
        b[i:i + n] = rng.integers(0, 256, min(n, len(b) - i), dtype=np.uint8).tobytes()
    else:              # a 16/32-bit field set to an extreme value
        i = int(rng.integers(8, min(len(b), 400)))
        b[i:i + 4] = bytes(rng.choice([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\xff\xff\x00\x00"]))
    return bytes(b)


def test_mutated_tiffs_read_or_fail_with_one_line(tmp_path, capfd):
    rng = np.random.default_rng(2026)
    originals = _originals()
    outcomes = {"read": 0, "refused": 0}
    logging.getLogger("tifffile").setLevel(logging.NOTSET)
    for case in range(CASES):
        path = tmp_path / f"case{case:03d}.tif"
        path.write_bytes(_mutate(originals[case % len(originals)], rng))
        try:
            with open_stack(path) as stack:
                frames = list(stack)
        except CellsegError as exc:
            message = str(exc)
            assert "\n" not in message and message.startswith(str(path)), (case, message)
            outcomes["refused"] += 1
            continue
        except Exception as exc:   # anything else is a crash of the tool
            pytest.fail(f"case {case}: {type(exc).__name__}: {exc}")
        info = stack.info
        assert len(frames) == info.n_frames >= 1
        assert all(f.shape == info.shape and f.dtype == info.dtype for f in frames), case
        outcomes["read"] += 1
    printed = capfd.readouterr()
    assert printed.out == "" and printed.err == "", printed.err[:500]
    assert outcomes["read"] > 20 and outcomes["refused"] > 20, outcomes   # the mutations reach both ends
