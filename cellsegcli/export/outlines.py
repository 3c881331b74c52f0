"""Cell outlines drawn over the input frame, one RGB PNG per frame, for looking at a result anywhere.

Outlines are the cells' own boundary pixels (``find_boundaries(mode="inner")``): yellow, or in a tracked
result each track in its own colour (the same on every frame). The frame is shown in grey, stretched
between its 1st and 99.8th percentiles (:func:`cellsegcli.overlay.to_display`); a result segmented with
``--no-image`` gets its outlines on black.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..overlay import OUTLINE, save_png, to_display, track_colour


def id_colours(ids: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 colour of each id, as :func:`cellsegcli.overlay.track_colour` gives it."""
    return np.array([track_colour(int(i)) for i in ids], np.uint8).reshape(-1, 3)


def outline_frame(labels: np.ndarray, image: np.ndarray | None = None, *, by_id: bool = False) -> np.ndarray:
    """(Y, X, 3) uint8 RGB: ``image`` in grey (black when None), the cells' inner boundary pixels coloured.

    Parameters
    ----------
    labels : (Y, X) integer array, 0 is background
    image : (Y, X) array of any dtype, or None
    by_id : colour each cell by its id (track ids: one colour per track), else all :data:`OUTLINE` yellow
    """
    from skimage.segmentation import find_boundaries

    if image is not None and image.shape != labels.shape:
        raise ValueError(f"labels {labels.shape} and image {image.shape} differ in shape")
    grey = np.zeros(labels.shape, np.uint8) if image is None else to_display(image)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    edges = find_boundaries(labels, mode="inner")
    if by_id:
        ids, which = np.unique(labels[edges], return_inverse=True)
        rgb[edges] = id_colours(ids)[which]
    else:
        rgb[edges] = OUTLINE
    return rgb


def write_outline_png(path: Path, labels: np.ndarray, image: np.ndarray | None = None, *,
                      by_id: bool = False) -> Path:
    """Draw :func:`outline_frame` and save it as a PNG ``path``."""
    return save_png(outline_frame(labels, image, by_id=by_id), Path(path))
