"""Decoded pairs kept at the model's size (`pair_cache`): a run decodes each photo once, and trains on the very
tensors a fresh decode gives."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Subset

from langbrt.training.data import paired
from langbrt.training.data.pair_cache import PairCache, pair_stamp
from langbrt.training.data.pair_discovery import ImagePair, find_pairs
from langbrt.training.data.pair_validation import read_pair
from langbrt.training.data.paired import PairedImageDataset, collate_pairs
from langbrt.training.datasets import build_dataset, check_alignment_of
from langbrt.training.train_config import TrainConfig

SIZE = 16  # px of the samples; the files are larger, so every sample is a real resize


def write_photo(path: Path, seed: int, size: tuple[int, int] = (48, 36)) -> Path:
    """A noisy RGB photo (size is W, H) in the format of its suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)  # (H, W, 3)
    Image.fromarray(pixels).save(path, quality=90) if path.suffix == ".jpg" else Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Three pairs, JPEG and PNG."""
    for i, suffix in enumerate((".jpg", ".png", ".jpg")):
        write_photo(tmp_path / "data" / "source" / f"p{i}{suffix}", seed=2 * i)
        write_photo(tmp_path / "data" / "target" / f"p{i}{suffix}", seed=2 * i + 1)
    return tmp_path / "data"


@pytest.fixture
def decodes(monkeypatch) -> list[str]:
    """The names of the pairs the dataset decodes, in order."""
    calls: list[str] = []
    real = paired.read_pair

    def counting(pair: ImagePair) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(pair.name)
        return real(pair)

    monkeypatch.setattr(paired, "read_pair", counting)
    return calls


def epochs(dataset: PairedImageDataset, count: int) -> list[dict]:
    samples = []
    for epoch in range(count):
        dataset.set_epoch(epoch)
        samples += [dataset[i] for i in range(len(dataset))]
    return samples


def assert_same_samples(got: list[dict], expected: list[dict]) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert (a["name"], a["prompts"]) == (b["name"], b["prompts"])
        assert torch.equal(a["source"], b["source"]) and torch.equal(a["target"], b["target"]), a["name"]


def uncached(pairs, **kwargs) -> PairedImageDataset:
    return PairedImageDataset(pairs, image_size=SIZE, cache_bytes=0, **kwargs)


def test_each_pair_is_decoded_once_over_many_epochs(root, decodes):
    dataset = PairedImageDataset(find_pairs(root), image_size=SIZE, flip=True, seed=5)
    epochs(dataset, 4)
    assert sorted(decodes) == ["p0", "p1", "p2"]


def test_cached_samples_are_bit_for_bit_those_of_a_fresh_decode_flips_included(root):
    pairs = find_pairs(root)
    cached = PairedImageDataset(pairs, image_size=SIZE, flip=True, seed=5)
    assert_same_samples(epochs(cached, 4), epochs(uncached(pairs, flip=True, seed=5), 4))
    assert len(cached.cache) == 3


def test_a_sample_changed_in_place_leaves_the_cache_alone(root):
    dataset = PairedImageDataset(find_pairs(root), image_size=SIZE)
    dataset[0]  # decoded and cached
    first = dataset[0]  # from the cache
    expected = first["source"].clone()
    first["source"].zero_()
    assert torch.equal(dataset[0]["source"], expected)


def test_a_file_rewritten_between_epochs_is_read_again(root, decodes):
    """A user replacing a pair's target mid-run trains on the new one from the next epoch, as without the cache."""
    pairs = find_pairs(root)
    dataset = PairedImageDataset(pairs, image_size=SIZE)
    epochs(dataset, 1)
    target = write_photo(pairs[1].target, seed=99)
    os.utime(target, ns=(0, os.stat(target).st_mtime_ns + 1_000_000_000))  # another second, whatever the clock
    decodes.clear()
    samples = epochs(dataset, 1)
    assert decodes == ["p1"]
    assert_same_samples(samples, epochs(uncached(pairs), 1))


def test_a_file_that_breaks_after_it_was_cached_is_skipped_as_before(root):
    pairs = find_pairs(root)
    dataset = PairedImageDataset(pairs, image_size=SIZE)
    epochs(dataset, 1)
    pairs[0].source.write_bytes(pairs[0].source.read_bytes()[:30])
    with pytest.warns(UserWarning, match="skipping image pair 'p0'"):
        sample = dataset[0]
    assert sample["name"] == "p1" and [s.path for s in dataset.skipped] == [pairs[0].source]


def test_a_file_removed_after_it_was_cached_is_skipped_as_before(root):
    pairs = find_pairs(root)
    dataset = PairedImageDataset(pairs, image_size=SIZE)
    epochs(dataset, 1)
    pairs[2].target.unlink()
    with pytest.warns(UserWarning, match="skipping image pair 'p2'"):
        assert dataset[2]["name"] == "p0"


def test_a_set_larger_than_the_cache_is_not_cached_at_all_and_served_decoded(root, decodes):
    """A part of it would be hit rarely (a new random order each epoch) while holding memory in every worker."""
    three_pairs = 3 * 2 * 3 * SIZE * SIZE * 4  # source and target, float32
    pairs = find_pairs(root)
    fits = PairedImageDataset(pairs, image_size=SIZE, cache_bytes=three_pairs)
    epochs(fits, 2)
    assert len(fits.cache) == 3 and fits.cache.bytes == three_pairs
    decodes.clear()
    too_large = PairedImageDataset(pairs, image_size=SIZE, cache_bytes=three_pairs - 1)
    samples = epochs(too_large, 2)
    assert len(too_large.cache) == 0 and sorted(decodes) == ["p0", "p0", "p1", "p1", "p2", "p2"]
    assert_same_samples(samples, epochs(uncached(pairs), 2))


def test_a_cache_keeps_no_more_than_its_bytes():
    cache = PairCache(max_bytes=2 * 3 * 4 * 4 * 4)
    images = [ImagePair(Path(__file__), Path(__file__), name) for name in ("a", "b")]
    for pair in images:
        cache.put(pair, pair_stamp(pair), torch.zeros(3, 4, 4), torch.zeros(3, 4, 4))
    assert len(cache) == 1 and cache.get(images[0]) is not None and cache.get(images[1]) is None


def test_the_alignment_check_fills_the_cache_so_training_decodes_nothing_more(root, decodes):
    dataset, _, base = build_dataset(TrainConfig(data=str(root)), image_size=SIZE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the noise pairs are no retouches; the check may say so
        check_alignment_of(dataset, TrainConfig(data=str(root)))
    assert sorted(decodes) == ["p0", "p1", "p2"]
    epochs(base, 2)
    assert sorted(decodes) == ["p0", "p1", "p2"]


def test_the_alignment_check_reaches_the_cache_through_a_subset(root, decodes):
    _, _, base = build_dataset(TrainConfig(data=str(root)), image_size=SIZE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_alignment_of(Subset(Subset(base, [0, 2]), [1]), TrainConfig(data=str(root)))
    assert decodes == ["p2"] and len(base.cache) == 1


def test_dataloader_workers_are_served_from_the_cache_the_training_process_filled(root, monkeypatch):
    pairs = find_pairs(root)
    expected = collate_pairs([uncached(pairs, flip=True, seed=1)[i] for i in range(3)])
    dataset = PairedImageDataset(pairs, image_size=SIZE, flip=True, seed=1)
    for pair in pairs:
        dataset.read_full(pair)

    def no_decoding(pair: ImagePair) -> tuple[torch.Tensor, torch.Tensor]:
        raise AssertionError(f"{pair.name} decoded again")

    monkeypatch.setattr(paired, "read_pair", no_decoding)  # forked workers inherit it
    loader = DataLoader(dataset, batch_size=3, num_workers=2, collate_fn=collate_pairs)
    [batch] = list(loader)
    assert torch.equal(batch["source"], expected["source"]) and torch.equal(batch["target"], expected["target"])


def test_read_full_gives_the_pair_at_full_size_and_caches_it_at_the_models(root, decodes):
    pair = find_pairs(root)[0]
    dataset = PairedImageDataset([pair], image_size=SIZE)
    source, target = dataset.read_full(pair)
    fresh_source, fresh_target = read_pair(pair)  # pair_validation's own, not the counting one
    assert source.shape == (3, 36, 48) and torch.equal(source, fresh_source) and torch.equal(target, fresh_target)
    sample = dataset[0]
    assert decodes == ["p0"]
    assert_same_samples([sample], [uncached([pair])[0]])


def test_nothing_is_cached_without_a_stamp(tmp_path):
    cache = PairCache()
    pair = ImagePair(tmp_path / "gone.png", tmp_path / "gone too.png", "gone")
    assert pair_stamp(pair) is None
    cache.put(pair, None, torch.zeros(3, 2, 2), torch.zeros(3, 2, 2))
    assert len(cache) == 0 and cache.bytes == 0
