import numpy as np
import pytest

from cellsegcli.tiling import effective_tile, gaussian_weights, make_grid, pad_frame, tile_starts


@pytest.mark.parametrize("length,tile,overlap", [(512, 512, 128), (1000, 256, 64), (2568, 512, 128), (300, 256, 0)])
def test_tiles_cover_the_frame_with_at_least_the_overlap(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] == length - tile
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s : s + tile] = True
    assert covered.all()
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))


def test_grid_pads_small_frames_to_one_tile_and_shrinks_the_tile():
    grid = make_grid((100, 70), tile=512, overlap=0.25)
    assert grid.tile == 128 and grid.padded == (128, 128) and len(grid.tiles) == 1
    assert effective_tile((1022, 1024), 512) == 512


def test_grid_tiles_are_inside_the_padded_frame():
    grid = make_grid((1022, 1500), tile=512, overlap=0.25)
    assert grid.padded == (1022, 1500)
    for t in grid.tiles:
        assert t.rows.stop <= 1022 and t.cols.stop <= 1500
        assert t.rows.stop - t.rows.start == 512 == t.cols.stop - t.cols.start


def test_pad_frame_keeps_the_original_in_the_corner():
    frame = np.arange(12, dtype=np.float32).reshape(3, 4)
    padded = pad_frame(frame, (8, 9))
    assert padded.shape == (8, 9)
    np.testing.assert_array_equal(padded[:3, :4], frame)


def test_gaussian_weights_peak_in_the_middle_and_never_vanish():
    w = gaussian_weights(64)
    assert w.shape == (64, 64) and w.dtype == np.float32
    assert w.max() == pytest.approx(1.0, abs=1e-3) and w.min() > 0
    np.testing.assert_array_equal(w, w.T)
    np.testing.assert_array_equal(w, w[::-1, ::-1])


@pytest.mark.parametrize("tile,overlap", [(0, 0.25), (100, 0.25), (64, 1.0)])
def test_bad_tiling_options_are_refused(tile, overlap):
    with pytest.raises(ValueError):
        make_grid((100, 100), tile=tile, overlap=overlap)
