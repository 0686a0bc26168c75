"""Pillow's decompression-bomb limit is raised for a read that allows more, shared by concurrent reads, and put
back by the last one."""

import pytest
from PIL import Image

from langbrt.pillow_guard import pillow_limit_at_least


def test_a_limit_under_pillows_leaves_it_alone(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pillow_limit_at_least(999):
        assert Image.MAX_IMAGE_PIXELS == 1000


def test_overlapping_raises_keep_the_largest_and_the_last_puts_pillows_back(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    outer = pillow_limit_at_least(5000)
    outer.__enter__()
    with pillow_limit_at_least(3000):
        assert Image.MAX_IMAGE_PIXELS == 5000
    with pillow_limit_at_least(9000):
        assert Image.MAX_IMAGE_PIXELS == 9000
    assert Image.MAX_IMAGE_PIXELS == 5000
    outer.__exit__(None, None, None)
    assert Image.MAX_IMAGE_PIXELS == 1000


def test_pillows_limit_is_put_back_after_an_error(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ValueError), pillow_limit_at_least(5000):
        raise ValueError("a bad file")
    assert Image.MAX_IMAGE_PIXELS == 1000


def test_a_guard_turned_off_stays_off(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with pillow_limit_at_least(5000):
        assert Image.MAX_IMAGE_PIXELS is None
