"""Data layer: writing each source kind, bad inputs, the embedded set, reproducible loaders.

Kept small and fast: tiny generated inputs in tmp_path, a handful of compiled loaders.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from starx.data import DataError, build_dataset, dataset_info, ensure_dataset, make_loader
from starx.data.embedded import COUNTS, PER_CLASS, load_embedded
from starx.data.idx import write_idx
from starx.data.info import read_samples
from starx.data.order import epoch_indices

RNG = np.random.default_rng(0)


def _images(n, h=12, w=12, c=3):
    return RNG.integers(0, 256, size=(n, h, w, c) if c else (n, h, w), dtype=np.uint8)


def _build(source, out, **kw):
    return build_dataset(source, out, progress=False, **kw)


def _no_leftovers(folder, name):
    """Neither the output nor a temporary sibling of it exists."""
    return not any(p.name == name or p.name.startswith(f".{name}.") for p in folder.iterdir())


@pytest.fixture(scope="module")
def npz_beton(tmp_path_factory):
    """40 colour 16x16 images, labels 0..3, written raw."""
    d = tmp_path_factory.mktemp("npz")
    x, y = _images(40, 16, 16), np.arange(40) % 4
    np.savez(d / "set.npz", x=x, y=y)
    return _build(f"npz:{d / 'set.npz'}", d / "set.beton").path, x, y


# -- round trips, one per source kind ----------------------------------------------------
def test_npz_round_trip(npz_beton):
    path, x, y = npz_beton
    assert dataset_info(path) == (40, 4)
    samples = read_samples(path)
    assert all(np.array_equal(img, x[i]) and label == y[i] for i, (img, label) in enumerate(samples))


def test_idx_gz_round_trip_grey_becomes_three_channels(tmp_path):
    x, y = _images(9, 10, 7, c=None), np.array([0, 1, 2, 0, 1, 2, 0, 1, 2], dtype=np.uint8)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", x)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", y)
    s = _build(f"idx:{tmp_path}", tmp_path / "t.beton", split="test")
    assert (s.images, s.classes) == (9, 3)
    for i, (img, label) in enumerate(read_samples(s.path)):
        assert img.shape == (10, 7, 3) and label == y[i]
        assert all(np.array_equal(img[:, :, c], x[i]) for c in range(3))


def _image_folder(root, ext, n_per_class=3, size=(20, 14)):
    """root/{cat,dog}/*.ext of smooth images (JPEG-friendly); returns {path: array}."""
    arrays = {}
    yy, xx = np.mgrid[0: size[1], 0: size[0]]
    for c, name in enumerate(["dog", "cat"]):  # created out of order: labels follow sorted names
        (root / name).mkdir(parents=True)
        for i in range(n_per_class):
            img = np.stack([xx * 9 + 20 * i, yy * 12 + 40 * c, (xx + yy) * 5], -1).clip(0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / name / f"{i}.{ext}", quality=95)
            arrays[root / name / f"{i}.{ext}"] = img
    return arrays


def test_imagefolder_png_round_trip_exact(tmp_path):
    arrays = _image_folder(tmp_path / "src", "png")
    s = _build(f"imagefolder:{tmp_path / 'src'}", tmp_path / "f.beton", write_mode="raw")
    assert (s.images, s.classes) == (6, 2)
    expected = sorted(arrays.items(), key=lambda kv: (kv[0].parent.name, kv[0].name))  # cat first
    for (img, label), (file, arr) in zip(read_samples(s.path), expected):
        assert label == ["cat", "dog"].index(file.parent.name)
        assert np.array_equal(img, arr)


@pytest.mark.parametrize("write_mode", ["raw", "jpg"])
def test_imagefolder_jpeg_round_trip_close(tmp_path, write_mode):
    arrays = _image_folder(tmp_path / "src", "jpg")
    s = _build(f"imagefolder:{tmp_path / 'src'}", tmp_path / "f.beton", write_mode=write_mode)
    expected = sorted(arrays.items(), key=lambda kv: (kv[0].parent.name, kv[0].name))
    for (img, label), (file, arr) in zip(read_samples(s.path), expected):
        assert label == ["cat", "dog"].index(file.parent.name)
        assert img.shape == arr.shape
        assert np.abs(img.astype(int) - arr).mean() < 4  # JPEG is lossy (twice for 'jpg')


def test_imagefolder_split_subfolder_and_max_resolution(tmp_path):
    _image_folder(tmp_path / "src" / "val", "png", size=(40, 20))
    s = _build(f"imagefolder:{tmp_path / 'src'}", tmp_path / "v.beton", split="test", max_resolution=20)
    assert s.images == 6
    assert read_samples(s.path, [0])[0][0].shape == (10, 20, 3)


def test_embedded_counts_and_class_balance(tmp_path):
    for split in ("train", "test"):
        x, y = load_embedded(split)
        assert x.shape == (COUNTS[split], 28, 28) and x.dtype == np.uint8
        assert np.bincount(y).tolist() == [PER_CLASS[split]] * 10
    s = _build("embedded", tmp_path / "e.beton", split="test")
    assert (s.images, s.classes) == (2000, 10)
    x, y = load_embedded("test")
    for i, (img, label) in zip([0, 777, 1999], read_samples(s.path, [0, 777, 1999])):
        assert np.array_equal(img[:, :, 0], x[i]) and label == y[i]


def test_ensure_dataset_builds_once_and_reuses(tmp_path):
    np.savez(tmp_path / "s.npz", x=_images(8), y=np.arange(8) % 2)
    first = ensure_dataset(f"npz:{tmp_path / 's.npz'}", tmp_path / "cache", "train", progress=False)
    stamp = first.stat().st_mtime_ns
    again = ensure_dataset(f"npz:{tmp_path / 's.npz'}", tmp_path / "cache", "train", progress=False)
    assert again == first and again.stat().st_mtime_ns == stamp
    assert ensure_dataset(str(first), tmp_path / "elsewhere", "train") == first  # a .beton path as is
    other = ensure_dataset(f"npz:{tmp_path / 's.npz'}", tmp_path / "cache", "train", write_mode="jpg",
                           progress=False)
    assert other != first


# -- bad inputs: a DataError naming the culprit, and nothing left behind --------------------
def test_missing_path(tmp_path):
    with pytest.raises(DataError, match="nowhere"):
        _build(f"imagefolder:{tmp_path / 'nowhere'}", tmp_path / "o.beton")
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        _build(f"idx:{tmp_path}", tmp_path / "o.beton")
    with pytest.raises(DataError, match="unknown data source"):
        _build("folder:/x", tmp_path / "o.beton")
    assert _no_leftovers(tmp_path, "o.beton")


def test_empty_class_folder(tmp_path):
    _image_folder(tmp_path / "src", "png")
    (tmp_path / "src" / "empty_one").mkdir()
    (tmp_path / "src" / "empty_one" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="empty_one.*empty class folder"):
        _build(f"imagefolder:{tmp_path / 'src'}", tmp_path / "o.beton")
    assert _no_leftovers(tmp_path, "o.beton")


def test_unreadable_image_names_file_and_leaves_no_output(tmp_path):
    _image_folder(tmp_path / "src", "png", n_per_class=40)
    (tmp_path / "src" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    with pytest.raises(DataError, match=r"broken\.jpg: unreadable image"):
        _build(f"imagefolder:{tmp_path / 'src'}", tmp_path / "o.beton", num_workers=2)
    assert _no_leftovers(tmp_path, "o.beton")


def test_labels_that_do_not_match_images(tmp_path):
    np.savez(tmp_path / "short.npz", x=_images(5), y=np.arange(4))
    with pytest.raises(DataError, match=r"short\.npz.*field 'y'"):
        _build(f"npz:{tmp_path / 'short.npz'}", tmp_path / "o.beton")
    np.savez(tmp_path / "nolabels.npz", x=_images(5))
    with pytest.raises(DataError, match=r"nolabels\.npz.*'y'"):
        _build(f"npz:{tmp_path / 'nolabels.npz'}", tmp_path / "o.beton")
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", _images(6, c=None))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(5, np.uint8))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz: 5 labels do not match 6 images"):
        _build(f"idx:{tmp_path}", tmp_path / "o.beton")
    assert _no_leftovers(tmp_path, "o.beton")


def test_interrupted_build_leaves_no_output(tmp_path, monkeypatch):
    from starx.data.ffcv_writer import GuardedWriter

    def interrupted(self, workers, done, errors):
        raise KeyboardInterrupt

    monkeypatch.setattr(GuardedWriter, "_wait", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _build("embedded", tmp_path / "o.beton", split="test")
    assert _no_leftovers(tmp_path, "o.beton")


def test_not_a_dataset_file(tmp_path):
    (tmp_path / "junk.beton").write_bytes(b"\x07" * 64)
    with pytest.raises(DataError, match="junk.beton"):
        dataset_info(tmp_path / "junk.beton")


# -- loading ---------------------------------------------------------------------------
def test_sharding_gives_disjoint_equal_shares():
    kw = dict(batch_size=4, seed=3, epoch=5)
    shards = [epoch_indices(103, rank=r, world_size=3, **kw) for r in range(3)]
    assert all(len(s) == 32 for s in shards)  # 103 // 3 // 4 * 4
    assert len(set().union(*map(set, shards))) == 96
    again = epoch_indices(103, rank=1, world_size=3, **kw)
    assert np.array_equal(again, shards[1])
    assert not np.array_equal(epoch_indices(103, rank=1, world_size=3, batch_size=4, seed=3, epoch=6), again)
    evals = [epoch_indices(10, batch_size=4, seed=0, epoch=0, rank=r, world_size=3, shuffle=False,
                           drop_last=False) for r in range(3)]
    assert sorted(np.concatenate(evals).tolist()) == list(range(10))  # eval: everything, once


def test_eval_loader_returns_stored_pixels_in_order(npz_beton):
    path, x, y = npz_beton
    loader = make_loader(path, stage="eval", batch_size=16, img_size=16, num_workers=1,
                         mean=(0, 0, 0), std=(1, 1, 1))
    assert len(loader) == 3  # 16 + 16 + 8, nothing dropped
    batches = list(loader)
    images = np.concatenate([(b * 255).round().byte().permute(0, 2, 3, 1).numpy() for b, _ in batches])
    labels = np.concatenate([lab.numpy() for _, lab in batches])
    assert np.array_equal(images, x) and np.array_equal(labels, y)
    assert batches[0][1].dtype.is_floating_point is False and batches[0][0].dtype.is_floating_point


def _finetune(path, **kw):
    opts = dict(stage="finetune", batch_size=8, img_size=12, in_chans=1, seq_multiplier=4, seed=7, epoch=2,
                num_workers=2, randaug="rand-m9-mstd0.5", reprob=0.5)
    return make_loader(path, **{**opts, **kw})


def test_same_seed_and_epoch_give_identical_batches_and_resume(npz_beton):
    path = npz_beton[0]
    a, b = _finetune(path), _finetune(path, num_workers=1)  # decode threads must not matter
    assert len(a) == 5
    first, second = list(a), list(b)
    for (xa, ya), (xb, yb) in zip(first, second):
        assert xa.shape == (8, 1, 12, 12) and xa.shape[0] % 4 == 0 and xa.dtype.is_floating_point
        assert xa.equal(xb) and ya.equal(yb)
    assert a.epoch == 3  # a finished epoch moves on
    a.set_epoch(2, start_batch=3)  # resume mid-epoch
    resumed = list(a)
    assert len(resumed) == 2 and all(r[0].equal(f[0]) for r, f in zip(resumed, first[3:]))
    a.set_epoch(2)
    abandoned = iter(a)
    next(abandoned)
    abandoned.close()  # an epoch left early must not disturb the next one
    a.set_epoch(2)
    assert all(r[0].equal(f[0]) for r, f in zip(a, first))
    b.set_epoch(3)
    assert not next(iter(b))[0].equal(first[0][0])  # another epoch, another order and crops


def test_pretrain_batches_are_rgb_and_sharded(npz_beton):
    path, _, _ = npz_beton
    loaders = [make_loader(path, stage="pretrain", batch_size=8, img_size=12, seq_multiplier=2, seed=1,
                           num_workers=1, rank=r, world_size=2) for r in range(2)]
    assert [len(ld) for ld in loaders] == [2, 2]  # 40 // 2 // 8
    x, y = next(iter(loaders[0]))
    assert x.shape == (8, 3, 12, 12) and y.shape == (8,)
    with pytest.raises(ValueError, match="multiple of seq_multiplier"):
        make_loader(path, stage="pretrain", batch_size=6, img_size=12, seq_multiplier=4)
