"""GPU checks: tiled TTA inference on CUDA matches the CPU result. Skipped without a CUDA device."""

import numpy as np
import pytest
import torch

from cellsegcli.device import autocast_dtype, resolve_device
from cellsegcli.inference import InferenceOptions, TiledPredictor, network_callable
from cellsegcli.models import build

pytestmark = pytest.mark.gpu
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@requires_cuda
def test_cuda_matches_cpu_with_tiling_and_d4():
    torch.manual_seed(0)
    net = build("resnet18-unet").eval()
    frame = np.random.default_rng(0).random((300, 420), dtype=np.float32)
    opts = InferenceOptions(tile=128, overlap=0.25, tta="d4", batch_size=8)
    cpu = TiledPredictor(network_callable(net, torch.device("cpu")), torch.device("cpu"), opts).predict(frame)
    dev = resolve_device("cuda")
    gpu = TiledPredictor(network_callable(net, dev), dev, opts).predict(frame)
    np.testing.assert_allclose(gpu, cpu, atol=1e-3)
    mixed = TiledPredictor(network_callable(net, dev), dev, opts, autocast=autocast_dtype(dev)).predict(frame)
    assert np.abs(mixed - cpu).mean() < 2e-2


@requires_cuda
def test_identity_model_on_cuda_is_exact():
    frame = np.random.default_rng(1).random((200, 260), dtype=np.float32)
    dev = resolve_device("cuda")
    out = TiledPredictor(lambda x: x, dev, InferenceOptions(tile=64, tta="d4"), activation=None).predict(frame)
    np.testing.assert_allclose(out[0], frame, atol=2e-6)


def test_cuda_request_without_a_gpu_fails_clearly():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    from cellsegcli.errors import CellsegError

    with pytest.raises(CellsegError, match="--device cpu"):
        resolve_device("cuda")


@requires_cuda
def test_out_of_memory_on_cuda_ends_with_blending_on_the_host():
    """Injected CUDA out-of-memory errors at every batch and tile: the back-off ends with the network on
    the GPU and the blending on the CPU, with the CPU's result."""
    torch.manual_seed(0)
    net = build("resnet18-unet").eval()
    frame = np.random.default_rng(0).random((300, 420), dtype=np.float32)
    dev = resolve_device("cuda")
    call, failed = network_callable(net, dev), [0]

    def tight(x):
        if x.shape[0] > 1 or x.shape[-1] > 128 or failed[0] < 1:
            failed[0] += x.shape[0] == 1 and x.shape[-1] == 128
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return call(x)

    pred = TiledPredictor(tight, dev, InferenceOptions(tile=256, tta="flip", batch_size=2))
    out = pred.predict(frame)
    assert pred.backoffs == ["batch size 2 -> 1", "tile 256 -> 128", "blending moved to the CPU"]
    ref = TiledPredictor(network_callable(net, torch.device("cpu")), torch.device("cpu"),
                         InferenceOptions(tile=128, tta="flip", batch_size=1)).predict(frame)
    np.testing.assert_allclose(out, ref, atol=1e-3)


@requires_cuda
def test_device_labels_on_cuda_equal_those_of_cpu_torch():
    from scipy import ndimage as ndi

    from cellsegcli.device_labels import label_instances_torch
    from cellsegcli.instances import interior_target, label_instances
    from cellsegcli.metrics import object_scores

    rng = np.random.default_rng(3)
    shape = (600, 800)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    truth = np.zeros(shape, np.int32)
    for i in range(1, 300):
        cy, cx, r = rng.integers(0, shape[0]), rng.integers(0, shape[1]), rng.uniform(5, 16)
        truth[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = i
    fg = ndi.gaussian_filter((truth > 0).astype(np.float32), 1.5)
    interior = ndi.gaussian_filter(interior_target(truth).astype(np.float32), 1.5)
    cpu = label_instances_torch(torch.from_numpy(fg), torch.from_numpy(interior)).numpy()
    dev = resolve_device("cuda")
    gpu = label_instances_torch(torch.from_numpy(fg).to(dev), torch.from_numpy(interior).to(dev)).cpu().numpy()
    np.testing.assert_array_equal(gpu, cpu)
    assert object_scores(gpu, label_instances(fg, interior))["f1"] >= 0.98
