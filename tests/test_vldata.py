"""Unit tests for lightkd.vldata: emoji with their names, easy-VQA (fetched once into the cache)."""
import numpy as np
import pytest
import torch

from lightkd import data, vldata
from lightkd.common import LightKDError, SourceMissing


@pytest.fixture(scope="module")
def emoji():
    return vldata.load_emoji(size=32)


@pytest.fixture(scope="module")
def vqa():
    return vldata.load_vqa()


def test_emoji_split_by_emoji_is_fixed_and_disjoint(emoji, monkeypatch):
    assert data.load_emoji is vldata.load_emoji  # re-exported by lightkd.data
    assert emoji.info["emoji"] == len(emoji.names) == 1870
    assert (len(emoji.train), len(emoji.dev), len(emoji.test)) == (1495, 188, 187)
    labels = [set(emoji.split(s).labels.tolist()) for s in vldata.SPLITS]
    assert not (labels[0] & labels[1]) and not (labels[0] & labels[2]) and not (labels[1] & labels[2])
    assert set.union(*labels) == set(range(1870))
    for s in vldata.SPLITS:  # every group appears in every split
        assert set(emoji.split(s).groups) == set(emoji.group_names)
    monkeypatch.setenv("LIGHTKD_SEED", "7")
    again = vldata.load_emoji("test", size=32)
    assert again.texts == emoji.test.texts and torch.equal(again.images, emoji.test.images)


def test_emoji_images_and_texts(emoji):
    x = emoji.train.images
    assert x.shape == (1495, 3, 32, 32) and x.dtype == torch.float32
    assert 0 <= x.min() and x.max() <= 1 and x.std() > 0.1
    assert len(emoji.group_names) == 9 and len(set(emoji.train.subgroups)) > 90
    for s in vldata.SPLITS:
        split = emoji.split(s)
        assert [emoji.names[i] for i in split.labels.tolist()] == split.texts
        assert set(split.styles) == {"noto"}
    banana = emoji.names.index("banana")
    row = [s for s in vldata.SPLITS if banana in emoji.split(s).labels.tolist()][0]
    sp = emoji.split(row)
    k = sp.labels.tolist().index(banana)
    assert sp.chars[k] == "\U0001F34C" and sp.groups[k] == "Food & Drink"
    r, g, b = sp.images[k].mean((1, 2)).tolist()  # a yellow fruit on white: less blue than red
    assert b < r - 0.05


def test_emoji_held_out_by_style():
    d = vldata.load_emoji(held_out="style", size=32)
    assert len(d.train) == 2 * 1870 and len(d.dev) + len(d.test) == 1870
    assert set(d.train.styles) == {"noto", "google"} and set(d.dev.styles) == set(d.test.styles) == {"twitter"}
    assert not set(d.dev.labels.tolist()) & set(d.test.labels.tolist())
    assert d.train.labels[:1870].tolist() == d.train.labels[1870:].tolist()  # the same emoji, two styles
    twitter = vldata.load_emoji("train", style="twitter", size=32)
    assert len(twitter) == 1495 and set(twitter.styles) == {"twitter"}
    # styles differ: the same emoji is a different picture in twitter's art
    noto = vldata.load_emoji("train", size=32)
    assert (twitter.images - noto.images).abs().mean() > 0.02


@pytest.mark.parametrize("kwargs, word", [
    ({"size": 4}, "size"), ({"size": 32.0}, "size"), ({"held_out": "group"}, "held_out"),
    ({"split": "val"}, "split"), ({"style": "apple"}, "style"), ({"held_out": "style", "style": "noto"}, "style"),
])
def test_emoji_bad_arguments(kwargs, word):
    with pytest.raises(LightKDError, match=word):
        vldata.load_emoji(**kwargs)


def test_missing_tools_say_what_to_install(tmp_cache, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SourceMissing, match="apt-get install fonts-noto-color-emoji"):
        vldata.debian_package("fonts-noto-color-emoji", "no/such/file.ttf")
    with pytest.raises(SourceMissing, match="install npm"):
        vldata.npm_package("emoji-datasource-twitter", "16.0.0")


def test_unknown_debian_package_is_one_clear_error(tmp_cache):
    with pytest.raises(SourceMissing, match="Debian package lightkd-no-such-package"):
        vldata.debian_package("lightkd-no-such-package", "no/such/file")


def test_vqa_sizes_and_vocabulary(vqa):
    assert vqa.num_answers == 13 and vqa.answer_names[:3] == ("circle", "green", "red")
    assert len(vqa.train.images) + len(vqa.dev.images) == 4000 and len(vqa.test.images) == 1000
    assert len(vqa.dev.images) == 400
    assert len(vqa.train) + len(vqa.dev) == 38575 and len(vqa.test) == 9673
    assert not set(vqa.train.image_ids) & set(vqa.dev.image_ids)
    assert vqa.train.images.shape[1:] == (3, 64, 64) and 0 <= vqa.train.images.min() <= vqa.train.images.max() <= 1
    for s in vldata.SPLITS:
        sp = vqa.split(s)
        assert sp.image_index.max() < len(sp.images) and sp.answers.max() < 13
    yes = vqa.answer_id("yes")
    assert 0.5 < (vqa.train.answers == yes).float().mean() * 2 < 1.0  # about 37% yes, 37% no
    with pytest.raises(LightKDError, match="not in the answer vocabulary"):
        vqa.answer_id("purple")
    with pytest.raises(LightKDError, match="split"):
        vldata.load_vqa("val")


def test_vqa_question_matches_its_image(vqa):
    """'what color is the shape?' is answered by the picture: the answer's colour is its most common non-white colour."""
    colours = {"red": (1, 0, 0), "green": (0, 1, 0), "blue": (0, 0, 1)}
    checked = 0
    for q, a, i in zip(vqa.test.questions, vqa.test.answers.tolist(), vqa.test.image_index.tolist()):
        name = vqa.answer_names[a]
        if q.startswith("what color is") and name in colours:
            pixels = vqa.test.images[i].reshape(3, -1)
            shape = pixels[:, (pixels - 1).abs().sum(0) > 0.3]  # not the white-ish background
            closest = min(colours, key=lambda c: (shape - torch.tensor(colours[c], dtype=torch.float32)[:, None]).abs().sum())
            assert closest == name, (q, name)
            checked += 1
        if checked == 20:
            break
    assert checked == 20


def test_vqa_single_split_loads_alone():
    test = vldata.load_vqa("test")
    assert isinstance(test, vldata.VQASplit) and len(test) == 9673
    assert np.array_equal(test.image_ids, sorted(test.image_ids))
