"""Batched augmentation: each option does what it says."""

import torch

from housenum.data.augment import Augment, augment_batch, cutmix, mixup, swap_sides

STILL = dict(translate=0.0, scale=0.0, rotate=0.0, jitter=0.0)   # no warp, no colour change


def run(aug: Augment, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    return augment_batch(x, aug, torch.Generator().manual_seed(seed))


def test_invert_flips_exactly_the_chosen_share():
    x = torch.rand(400, 3, 32, 32)
    plain = run(Augment(), x)
    inverted = run(Augment(invert=1.0), x)
    torch.testing.assert_close(inverted, 1 - plain)       # same warp and jitter, colours inverted
    half = run(Augment(invert=0.5), x)
    flipped = [(not torch.allclose(h, p)) for h, p in zip(half, plain)]
    assert 150 < sum(flipped) < 250
    for h, p, f in zip(half, plain, flipped):
        torch.testing.assert_close(h, 1 - p if f else p)


def test_shuffle_channels_permutes_each_image_colours():
    x = torch.rand(64, 3, 32, 32)
    out = run(Augment(shuffle_channels=True, **STILL), x)
    changed = 0
    for o, i in zip(out, x):
        order = [int(torch.nonzero(torch.isclose(o[c], i).all(dim=(1, 2)))[0]) for c in range(3)]
        assert sorted(order) == [0, 1, 2]
        changed += order != [0, 1, 2]
    assert changed > 32                                     # 5 of 6 permutations move something
    grey = torch.rand(8, 1, 32, 32)
    torch.testing.assert_close(run(Augment(shuffle_channels=True, **STILL), grey), grey)


def test_shear_slants_a_vertical_bar():
    x = torch.zeros(32, 1, 32, 32)
    x[:, :, :, 15:17] = 1.0
    out = run(Augment(shear=20.0, **STILL), x)
    columns = torch.arange(32.0)

    def centre(row: torch.Tensor) -> torch.Tensor:
        return (row * columns).sum(-1) / row.sum(-1)

    slope = centre(out[:, 0, 4]) - centre(out[:, 0, 27])    # bar centre, top row minus bottom row
    assert slope.abs().max() > 3                            # up to tan(20 deg) * 23 px = 8.4 px
    assert (slope > 1).any() and (slope < -1).any()         # both directions
    torch.testing.assert_close(run(Augment(**STILL), x), x, atol=1e-5, rtol=0)


def test_swap_sides_gives_chosen_images_another_crops_sides_and_keeps_their_centre():
    x = torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 0.2
    x[32:] += 0.7                                             # half the crops dark, half bright
    x[:, :, :, 12:20] = 0.5                                   # each crop's "digit": a mid-grey centre
    out = swap_sides(x, 1.0, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out[:, :, :, 7:25], x[:, :, :, 7:25])   # the centre is never touched
    changed = (out[:, :, :, :3] != x[:, :, :, :3]).flatten(1).any(1)
    assert changed.float().mean() > 0.9          # every crop but one that drew itself as donor
    # a bright donor's strips shown on a dark crop are brought to the dark crop's level, and back
    # (matched, a crop's mean moves by at most 0.09 here; unmatched, by up to 0.31)
    assert (out.mean(dim=(1, 2, 3)) - x.mean(dim=(1, 2, 3))).abs().max() < 0.15
    torch.testing.assert_close(swap_sides(x, 0.0, torch.Generator().manual_seed(0)), x)


def test_mixup_blends_each_image_with_its_partner_by_one_weight():
    x = torch.rand(16, 3, 32, 32)
    mixed, perm, lam = mixup(x, 0.2, torch.Generator().manual_seed(3))
    assert 0.0 <= lam <= 1.0
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x[perm])
    again = mixup(x, 0.2, torch.Generator().manual_seed(3))
    assert again[2] == lam and torch.equal(again[1], perm)        # replays from the generator


def test_cutmix_pastes_one_rectangle_of_the_partner_and_lam_is_the_share_kept():
    x = torch.rand(16, 3, 32, 32)
    for seed in range(20):
        mixed, perm, lam = cutmix(x, 1.0, torch.Generator().manual_seed(seed))
        from_partner = (mixed != x).any(1)                  # (N, H, W): pixels that came from the partner
        moved = perm != torch.arange(16)
        assert torch.equal(mixed[~moved], x[~moved])        # an image paired with itself is unchanged
        rows, cols = from_partner[moved].any(0).any(1), from_partner[moved].any(0).any(0)
        box = from_partner[moved].any(0)
        assert torch.equal(box, rows[:, None] & cols[None, :])   # the pasted pixels form one rectangle
        assert torch.equal(mixed[:, :, box], x[perm][:, :, box])
        assert abs((1 - lam) - box.float().mean().item()) < 1e-6   # lam: the share of each image kept
        again = cutmix(x, 1.0, torch.Generator().manual_seed(seed))
        assert again[2] == lam and torch.equal(again[0], mixed)   # replays from the generator

