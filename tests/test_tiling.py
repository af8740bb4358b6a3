import pytest
import torch

from certsr_rt.runtime.tiling import blend_weights, make_tiles, tile_starts


@pytest.mark.parametrize(
    "length,tile,overlap", [(10, 4, 1), (100, 32, 8), (33, 32, 8), (32, 32, 8), (5, 32, 8)]
)
def test_tiles_cover_with_overlap(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    covered = set()
    for s in starts:
        covered.update(range(s, min(s + tile, length)))
    assert covered == set(range(length))
    for a, b in zip(starts, starts[1:], strict=False):
        assert a + tile - b >= overlap


def test_weights_partition_unity_shape_and_borders():
    tiles = make_tiles(40, 50, 16, 4)
    total = torch.zeros(40 * 2, 50 * 2)
    for t in tiles:
        w = blend_weights(t, tiles, 2, torch.device("cpu"))
        assert w.shape == ((t.y1 - t.y0) * 2, (t.x1 - t.x0) * 2)
        assert (w > 0).all()
        total[t.y0 * 2 : t.y1 * 2, t.x0 * 2 : t.x1 * 2] += w
    assert (total > 0).all()


def test_single_tile_has_uniform_weight():
    tiles = make_tiles(20, 20, 0, 4)
    assert len(tiles) == 1
    assert torch.equal(blend_weights(tiles[0], tiles, 4, torch.device("cpu")), torch.ones(80, 80))


def test_overlap_must_be_smaller_than_tile():
    with pytest.raises(ValueError, match="overlap"):
        make_tiles(100, 100, 8, 8)
