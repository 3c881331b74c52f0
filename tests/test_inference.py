import numpy as np
import pytest
import torch

from cellsegcli.inference import InferenceOptions, TiledPredictor

CPU = torch.device("cpu")


def identity(x):
    return x


def _predictor(model=identity, activation=None, **opts):
    return TiledPredictor(model, CPU, InferenceOptions(**opts), activation=activation)


@pytest.mark.parametrize("tta", ["none", "flip", "d4"])
@pytest.mark.parametrize("shape", [(100, 70), (300, 257), (64, 64)])
def test_identity_model_returns_the_input_through_tiling_and_tta(tta, shape):
    frame = np.random.default_rng(0).random(shape, dtype=np.float32)
    out = _predictor(tile=64, overlap=0.25, tta=tta, batch_size=3).predict(frame)
    assert out.shape == (1, *shape) and out.dtype == np.float32
    # exact up to float32 rounding of the weighted sums (a few ulps)
    np.testing.assert_allclose(out[0], frame, rtol=0, atol=2e-6)


def _conv_model():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 3, padding=1))
    return net.eval()


def test_tiled_equals_untiled_when_the_frame_fits_one_tile():
    net = _conv_model()
    frame = np.random.default_rng(1).random((90, 120), dtype=np.float32)
    tiled = TiledPredictor(net, CPU, InferenceOptions(tile=128, tta="none")).predict(frame)
    padded = np.pad(frame, ((0, 38), (0, 8)), mode="reflect")
    with torch.no_grad():
        direct = torch.sigmoid(net(torch.from_numpy(padded)[None, None]))[0, :, :90, :120].numpy()
    np.testing.assert_allclose(tiled, direct, atol=1e-5)


def test_overlapping_tiles_agree_with_a_whole_frame_pass_for_a_local_model():
    # a 2-layer 3x3 model sees 2 px around each pixel; only the 2 px rim of each tile differs from the whole
    # pass, and the Gaussian gives that rim a small weight (~1e-3..1e-2) next to the overlapping tile
    net = _conv_model()
    frame = np.random.default_rng(2).random((200, 160), dtype=np.float32)
    tiled = TiledPredictor(net, CPU, InferenceOptions(tile=64, overlap=0.5, tta="none")).predict(frame)
    with torch.no_grad():
        whole = torch.sigmoid(net(torch.from_numpy(frame)[None, None]))[0].numpy()
    inner = (slice(4, -4), slice(4, -4))
    np.testing.assert_allclose(tiled[:, inner[0], inner[1]], whole[:, inner[0], inner[1]], atol=1e-2)


def test_stream_yields_frames_in_order_and_batches_across_frames():
    calls = []

    def model(x):
        calls.append(x.shape[0])
        return x

    frames = [np.full((64, 64), i, np.float32) for i in range(5)]
    pred = _predictor(model, tile=64, tta="flip", batch_size=8)
    outs = list(pred.predict_stream(iter(frames)))
    assert [float(o.mean()) for o in outs] == [0, 1, 2, 3, 4]
    assert calls[0] == 8  # jobs of two frames (4 TTA transforms each) share the first batch
    assert sum(calls) == 5 * 4 == pred.tiles_run


def test_tta_averages_a_non_equivariant_model():
    # a model that adds a horizontal ramp: d4 averaging of the un-transformed outputs cancels it to its mean
    ramp = torch.linspace(-1, 1, 32)

    def model(x):
        return x + ramp

    frame = np.zeros((32, 32), np.float32)
    out = _predictor(model, tile=32, tta="d4").predict(frame)
    np.testing.assert_allclose(out, 0.0, atol=1e-6)


def test_cpu_mixed_precision_follows_the_cpu_and_can_be_turned_off(monkeypatch):
    from cellsegcli.device import autocast_dtype, cpu_has_bf16

    cpu = torch.device("cpu")
    assert autocast_dtype(cpu) == (torch.bfloat16 if cpu_has_bf16() else None)
    monkeypatch.setenv("CELLSEG_CPU_AMP", "0")
    assert autocast_dtype(cpu) is None


@pytest.mark.parametrize("scale", [0.5, 0.77, 2.0, 3.1])
def test_a_rescaled_frame_comes_back_at_its_own_size(scale):
    # identity model: the output is the input resized by `scale` and back; exact for a constant frame,
    # within interpolation error (< 0.02 of the range) for a smooth one
    yy, xx = np.mgrid[:301, :457]
    smooth = (0.5 + 0.5 * np.sin(yy / 23) * np.cos(xx / 31)).astype(np.float32)
    for frame, atol in ((np.full((301, 457), 0.3, np.float32), 1e-6), (smooth, 0.02)):
        out = _predictor(tile=128, scale=scale).predict(frame)
        assert out.shape == (1, 301, 457)
        np.testing.assert_allclose(out[0], frame, rtol=0, atol=atol)


def test_the_model_sees_the_frame_resized_by_scale_and_tiling_does_not_change_that():
    seen = []

    def model(x):
        seen.append(tuple(x.shape[-2:]))
        return x

    frame = np.random.default_rng(3).random((100, 150), dtype=np.float32)
    one_tile = _predictor(model, tile=320, scale=2.0).predict(frame)
    assert seen == [(320, 320)]   # 200 x 300, padded to one 320 tile
    tiled = _predictor(tile=64, overlap=0.25, scale=2.0).predict(frame)
    np.testing.assert_allclose(tiled, one_tile, rtol=0, atol=2e-6)


def test_scale_one_is_exactly_the_unscaled_path():
    frame = np.random.default_rng(4).random((90, 70), dtype=np.float32)
    net = _conv_model()
    a = TiledPredictor(net, CPU, InferenceOptions(tile=64)).predict(frame)
    b = TiledPredictor(net, CPU, InferenceOptions(tile=64, scale=1.0)).predict(frame)
    assert np.array_equal(a, b)


@pytest.mark.parametrize("scale", [0.0, -1.0, 0.01, 25.0])
def test_implausible_scales_are_refused(scale):
    with pytest.raises(ValueError, match="scale"):
        InferenceOptions(scale=scale)


def test_batched_tta_equals_one_job_at_a_time():
    """Batches that hold several tiles, a tile's transforms split over two batches, tiles of two frames:
    same output as one (tile, transform) per batch, for a model that is neither equivariant nor local."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 2, 5, padding=2)
    ramp = torch.linspace(-1, 1, 64)

    def model(x):
        with torch.no_grad():
            return conv(x) + ramp + x.mean(dim=(1, 2, 3), keepdim=True)   # per tile, not per batch

    rng = np.random.default_rng(0)
    frames = [rng.random((100, 120)).astype(np.float32) for _ in range(2)]
    ref = list(_predictor(model, tile=64, tta="d4", batch_size=1).predict_stream(frames))
    for batch in (3, 8, 13):
        got = list(_predictor(model, tile=64, tta="d4", batch_size=batch).predict_stream(frames))
        for a, b in zip(got, ref, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("tta, batch, frame_shape, expected", [
    ("d4", 4, (300, 500), (4, 1, 64, 64)),       # a full batch of the frame's tiles
    ("none", 8, (100, 70), (4, 1, 64, 64)),      # fewer jobs in a frame than the batch holds
    ("none", 2, (40, 30), (1, 1, 64, 64)),       # a frame smaller than a tile: one tile, padded
])
def test_warm_up_runs_the_first_batch_shape_once_and_counts_nothing(tta, batch, frame_shape, expected):
    calls = []

    def model(x):
        calls.append(tuple(x.shape))
        return x

    pred = _predictor(model, tile=64, overlap=0.25, tta=tta, batch_size=batch)
    pred.warm_up(frame_shape)
    assert calls == [expected]
    assert pred.tiles_run == 0 and pred.forward_seconds == 0
    frame = np.random.default_rng(3).random(frame_shape, dtype=np.float32)
    np.testing.assert_allclose(pred.predict(frame)[0], frame, rtol=0, atol=2e-6)   # results as without it


def test_warm_up_leaves_running_out_of_memory_to_the_first_batch():
    def model(x):
        raise torch.OutOfMemoryError("CUDA out of memory")

    _predictor(model, tile=64).warm_up((100, 100))   # no error: predict_stream's back-off handles it there
    with pytest.raises(ValueError, match="not memory"):
        _predictor(lambda x: (_ for _ in ()).throw(ValueError("not memory")), tile=64).warm_up((100, 100))
