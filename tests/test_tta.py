import pytest
import torch

from cellsegcli import tta


@pytest.mark.parametrize("k", range(8))
def test_every_transform_is_undone_by_its_inverse(k):
    x = torch.arange(2 * 5 * 7, dtype=torch.float32).reshape(2, 5, 7)
    y = tta.apply(x, k)
    assert torch.equal(tta.invert(y, k), x)


def test_d4_transforms_are_the_eight_distinct_symmetries_of_the_square():
    x = torch.arange(16, dtype=torch.float32).reshape(4, 4)
    images = {tuple(tta.apply(x, k).flatten().tolist()) for k in tta.transforms("d4")}
    assert len(images) == 8


def test_flip_mode_is_the_four_axis_flips():
    x = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    got = {tuple(tta.apply(x, k).flatten().tolist()) for k in tta.transforms("flip")}
    want = {tuple(t.flatten().tolist()) for t in (x, x.flip(-1), x.flip(-2), x.flip(-1).flip(-2))}
    assert got == want


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="d4"):
        tta.transforms("d8")


@pytest.mark.parametrize("size", [1, 4, 7])
def test_permutations_are_the_transforms_as_one_gather(size):
    x = torch.randn(2, 3, size, size)
    forward, inverse = tta.permutations(size)
    for k in range(8):
        assert torch.equal(x.flatten(-2)[..., forward[k]].view_as(x), tta.apply(x, k))
        assert torch.equal(x.flatten(-2)[..., inverse[k]].view_as(x), tta.invert(x, k))
