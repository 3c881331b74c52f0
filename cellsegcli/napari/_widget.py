"""The ``Segment cells`` dock widget: runs :func:`cellsegcli.napari._segment.iter_segment_in_process` on an
image layer from a worker thread (the network in a child process), with a progress bar, and shows the result as the Labels layer ``cells`` (placed as
the image: same scale, translation, units and axis names).

The only module of the package that imports napari, magicgui and Qt (napari imports it when the widget
is opened). No ``from __future__ import annotations`` here: napari passes the viewer to the parameter
named ``napari_viewer``.
"""

import napari
import numpy as np
from magicgui.widgets import ComboBox, Container, FloatSpinBox, Label, ProgressBar, PushButton
from napari.layers import Image, Labels
from napari.qt.threading import thread_worker

from ._segment import TTA_MODES, SegmentOptions, as_frames, iter_segment_in_process, model_names

LABELS_NAME = "cells"


def device_names() -> list[str]:
    """The devices torch sees here: auto, cpu, then each CUDA GPU and MPS."""
    import torch

    names = ["auto", "cpu"]
    names += [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    return names


@thread_worker
def _segment_worker(data, options: SegmentOptions):
    """Yields ``(frames done, frames)`` after each frame (a point where the worker can be stopped), returns
    the (T, Y, X) or (Y, X) labels."""
    frames = as_frames(data)   # a (Y, X) image is one frame; other shapes fail here, before a model loads
    out = np.zeros(frames.shape, np.uint32)
    yield 0, len(frames)
    for t, labels in enumerate(iter_segment_in_process(frames, options)):   # the network in a child
        out[t] = labels
        yield t + 1, len(frames)
    return out if len(data.shape) == 3 else out[0]


class SegmentWidget(Container):
    """Image layer, model, TTA, diameter and device; ``Segment`` runs in a worker (press it again to stop)."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        self._viewer = napari_viewer
        self._worker = None
        names = model_names()
        self.image = ComboBox(label="image", choices=self._image_layers, nullable=False,
                              tooltip="the image layer to segment: (Y, X) or (T, Y, X), one channel")
        self.model = ComboBox(label="model", choices=names, nullable=not names,
                              value="phase" if "phase" in names else (names[0] if names else None),
                              tooltip="a shipped model (cellseg models lists them)")
        self.tta = ComboBox(label="TTA", choices=list(TTA_MODES), value="auto",
                            tooltip="test-time augmentation: auto is d4 on a GPU, none on a CPU; "
                                    "flip runs 2 passes, d4 8")
        self.diameter = FloatSpinBox(label="diameter (px)", value=0.0, min=0.0, max=10_000.0, step=1.0,
                                     tooltip="typical cell diameter in pixels (0: the model's own scale)")
        self.device = ComboBox(label="device", choices=device_names(), value="auto")
        self.run_button = PushButton(text="Segment")
        self.progress = ProgressBar(label="frames", value=0, min=0, max=1)
        self.status = Label(value="")
        super().__init__(widgets=[self.image, self.model, self.tta, self.diameter, self.device, self.run_button,
                                  self.progress, self.status])
        self.run_button.changed.connect(self._clicked)
        for event in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            event.connect(self.image.reset_choices)

    @property
    def running(self) -> bool:
        """Whether a segmentation started by :meth:`run` has not finished yet."""
        return self._worker is not None

    def _image_layers(self, _widget=None) -> list[tuple[str, Image]]:
        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, Image)]

    def options(self) -> SegmentOptions:
        """The options as set in the widget."""
        diameter = float(self.diameter.value)
        return SegmentOptions(model=self.model.value, tta=self.tta.value, device=self.device.value,
                              diameter=diameter if diameter > 0 else None)

    def _clicked(self) -> None:
        if self._worker is not None:
            self._worker.quit()
            self.status.value = "stopping after this frame..."
            return
        self.run()

    def run(self):
        """Start segmenting the chosen image layer; returns the worker (None when there is nothing to do)."""
        layer = self.image.value
        if layer is None:
            self.status.value = "open an image first"
            return None
        if self.model.value is None:
            self.status.value = "no shipped models found (weights/ or $CELLSEG_WEIGHTS)"
            return None
        data = layer.data[0] if layer.multiscale else layer.data
        if layer.rgb:
            data = np.asarray(data)[..., :3].astype(np.float32).mean(axis=-1)
        # errored handled here (napari also shows it as a notification): no re-raise into Qt's event loop
        worker = _segment_worker(data, self.options(), _connect={"errored": self._failed}, _start_thread=False)
        worker.yielded.connect(self._show_progress)
        worker.returned.connect(lambda labels: self._add_labels(labels, layer))
        worker.aborted.connect(lambda: setattr(self.status, "value", "stopped"))
        worker.finished.connect(self._finished)
        self._worker = worker
        self.run_button.text = "Stop"
        self.status.value = f"segmenting {layer.name} with {self.model.value}..."
        worker.start()
        return worker

    def _show_progress(self, step: tuple[int, int]) -> None:
        done, total = step
        self.progress.max = total
        self.progress.value = done

    def _add_labels(self, labels: np.ndarray, image: Image) -> None:
        placed = {"scale": image.scale, "translate": image.translate, "units": image.units,
                  "axis_labels": image.axis_labels}
        if LABELS_NAME in self._viewer.layers and isinstance(self._viewer.layers[LABELS_NAME], Labels):
            existing = self._viewer.layers[LABELS_NAME]
            existing.data = labels
            for key, value in placed.items():
                setattr(existing, key, value)
            existing.visible = True
        else:
            self._viewer.add_labels(labels, name=LABELS_NAME, **placed)
        self.status.value = f"{int(labels.max(initial=0))} cells" if labels.ndim == 2 else \
            f"{len(labels)} frames segmented"

    def _failed(self, exc: BaseException) -> None:
        self.status.value = f"failed: {exc}"

    def _finished(self) -> None:
        self._worker = None
        self.run_button.text = "Segment"
