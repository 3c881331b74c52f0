"""The napari plugin (npe2, manifest ``cellsegcli/napari.yaml``): a reader of cellseg results and a
segmentation widget.

- :mod:`._reader`: ``NAME.zarr`` written by ``cellseg segment`` / ``cellseg track`` -> napari LayerData
  tuples (image, ``cells`` labels, probabilities, tracks), lazily; plain functions, no napari import.
- :mod:`._segment`: an array in, instance labels out (the library's predictor and instance labelling),
  progress through a callback or a generator; no napari import.
- :mod:`._widget`: the dock widget that runs :mod:`._segment` on an image layer in a worker thread; the
  only module that imports napari, magicgui and Qt.

Install with ``pip install "cellseg[napari]"``.
"""
