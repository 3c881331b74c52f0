"""A frame range of a stack (``--frames START:STOP[:STEP]``), read as a stack of its own.

The result of ``cellseg segment --frames 100:200`` holds 100 frames (zarr index 0-99) whose tables keep
the movie's frame numbers (100-199); the NGFF ``t`` axis maps the index back with a scale and a
translation, so viewers show the original times.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

from ..errors import CellsegError


def parse_frames(spec: str, n_frames: int, *, where: str = "") -> range:
    """``START:STOP[:STEP]`` (Python slice semantics, STOP excluded, each part optional, no negatives) ->
    the frames of a stack of ``n_frames`` it selects; a single number ``N`` means frame N alone.

    Raises
    ------
    CellsegError when the text is not such a range, or selects no frame of this stack.
    """
    prefix = f"{where}: " if where else ""
    text = spec.strip()
    parts = text.split(":")
    try:
        if len(parts) == 1:
            start = int(parts[0])
            stop, step = start + 1, 1
        elif len(parts) in (2, 3):
            start = int(parts[0]) if parts[0] else 0
            stop = int(parts[1]) if parts[1] else n_frames
            step = int(parts[2]) if len(parts) == 3 and parts[2] else 1
        else:
            raise ValueError
    except ValueError:
        raise CellsegError(f"{prefix}--frames {spec!r}: give START:STOP[:STEP] in frame numbers, e.g. 100:200 "
                           f"or 0:600:10 (STOP excluded)") from None
    if start < 0 or stop < 0 or step < 1:
        raise CellsegError(f"{prefix}--frames {spec!r}: frame numbers count from 0 and STEP from 1")
    if start >= n_frames or stop <= start:
        raise CellsegError(f"{prefix}--frames {spec!r} selects no frame of this stack of {n_frames} frames "
                           f"(0-{n_frames - 1})")
    if stop > n_frames:
        raise CellsegError(f"{prefix}--frames {spec!r}: the stack has {n_frames} frames (0-{n_frames - 1}); "
                           f"give STOP <= {n_frames}, or leave it out")
    return range(start, stop, step)


def provenance_numbers(attributes: dict, n_frames: int) -> range:
    """The movie's frame numbers of a result's ``n_frames`` frames, from its provenance
    (``attrs["cellseg"]["frames"]``, written by ``segment --frames``); 0..n-1 when it has none (or none
    that fits)."""
    frames = attributes.get("frames") if isinstance(attributes, dict) else None
    if isinstance(frames, dict) and all(isinstance(frames.get(k), int) for k in ("start", "stop", "step")):
        numbers = range(frames["start"], frames["stop"], frames["step"])
        if len(numbers) == n_frames:
            return numbers
    return range(n_frames)


class FrameView:
    """``numbers`` (a range of frame numbers) of ``stack``, read as a stack: ``view.frame(i)`` is the
    stack's frame ``numbers[i]``; ``info.n_frames`` is ``len(numbers)``. Closing it closes the stack."""

    def __init__(self, stack, numbers: range):
        self._stack = stack
        self.numbers = numbers
        self.movie_frames = stack.info.n_frames
        self.info = dataclasses.replace(stack.info, n_frames=len(numbers))

    def __len__(self) -> int:
        return len(self.numbers)

    def frame(self, i: int) -> np.ndarray:
        if not 0 <= i < len(self.numbers):
            raise IndexError(f"frame {i} out of range for a selection of {len(self.numbers)} frames")
        return self._stack.frame(self.numbers[i])

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self.frame(i)

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> FrameView:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
