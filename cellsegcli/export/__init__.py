"""``cellseg export``: a finished cellseg result (``NAME.zarr``) in the formats other tools read.

- ``tiff``: labels as an ImageJ uint16 hyperstack (Fiji, TrackMate's label-image detector), or one TIFF
  per frame (:mod:`.tiff`);
- ``rois``: one ImageJ ROI set per frame, a polygon per cell (:mod:`.rois`);
- ``outlines``: one PNG per frame, outlines over the image (:mod:`.outlines`);
- ``ctc``: a Cell Tracking Challenge result folder (:func:`cellsegcli.tracking.pipeline.export_ctc`).

:func:`export_result` writes any of them in one pass over the frames (:mod:`.pipeline`).
"""

from __future__ import annotations

from .pipeline import export_result

__all__ = ["export_result"]
