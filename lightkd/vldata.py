"""Image-text data for the vision-language chapter, fetched from package
registries so that it works on an offline machine.

Read top to bottom:

1. ``debian_package`` / ``npm_package``: the files of a Debian package
   (``apt-get download`` + ``dpkg -x``, no root needed) or an npm package
   (``npm pack`` + untar), fetched once into the lightkd cache under a lock
   and moved into place atomically, like ``common.registry_package`` for pip.
2. ``load_emoji``: emoji pictures paired with their Unicode names. The list
   of emoji is Unicode's ``emoji-test.txt`` (Debian ``unicode-data``): every
   fully-qualified emoji without a skin-tone modifier, with its group (9) and
   subgroup (about 100); 1,870 emoji in Unicode 15.0. Three art styles draw
   the same emoji: ``"noto"`` (Google's Noto Color Emoji font from Debian
   ``fonts-noto-color-emoji``, rendered with Pillow; the colour bitmaps exist
   only at size 109), ``"twitter"`` and ``"google"`` (the 64-pixel PNGs of
   npm ``emoji-datasource-twitter`` / ``emoji-datasource-google`` 16.0.0).
   Two fixed splits, whatever ``LIGHTKD_SEED`` says:

   - ``held_out="emoji"``: each group's emoji are permuted by
     ``numpy.random.default_rng(2015)`` and cut 80 / 10 / 10 into train /
     dev / test, so a test emoji (and its name) is never seen in training.
   - ``held_out="style"``: train = every emoji drawn by noto and by google
     (two renderings of Google's one design), dev / test = twitter's
     drawings of two fixed halves of the emoji (each group's emoji permuted
     by ``default_rng(2016)``). A test picture's art style is new; its name
     is not.

   Online readers who want photographs: COCO captions (Karpathy split) and
   Flickr30k through ``datasets`` (e.g. ``yerevann/coco-karpathy``).
3. ``load_vqa``: easy-VQA (PyPI ``easy-vqa`` 1.0): 64 x 64 pictures of one
   coloured shape, template questions ("what color is the triangle?",
   "is there a red shape?") and 13 one-word answers. 4,000 train / 1,000
   test images, 38,575 / 9,673 questions. A dev split holds out the
   questions of 10% of the training *images* (``default_rng(2019)``).
   Online: VQA v2 through ``datasets`` (``HuggingFaceM4/VQAv2``).

Images come back as float tensors (N, 3, S, S) in [0, 1], RGB on a white
background; they are cached as uint8 arrays so a second load is fast.
"""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .common import LightKDError, SourceMissing, atomic_dir, cache_dir, cached_file, locked, registry_package

SPLITS = ("train", "dev", "test")
EMOJI_STYLES = ("noto", "twitter", "google")
STYLE_SPLIT = {"train": ("noto", "google"), "dev": ("twitter",), "test": ("twitter",)}  # held_out="style"
EMOJI_NPM_VERSION = "16.0.0"
EMOJI_GROUP_SEED, STYLE_HALF_SEED, VQA_DEV_SEED = 2015, 2016, 2019
NOTO_FONT = "usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
EMOJI_TEST = "usr/share/unicode/emoji/emoji-test.txt"
EASY_VQA = ("easy-vqa", "1.0")


# ------------------------------------------------------- fetching packages
def debian_package(name: str, wanted: str) -> Path:
    """The root folder of Debian package ``name`` that holds file ``wanted``
    (a path relative to /). An installed copy (``/wanted`` exists) is used as
    is; otherwise ``apt-get download`` + ``dpkg -x`` unpack it once into the
    cache, which needs no root."""
    if (Path("/") / wanted).exists():
        return Path("/")
    target = cache_dir("sources", "debian") / name
    if (target / ".complete").exists():
        return target
    with locked(target):
        if (target / ".complete").exists():
            return target
        hint = (f"Install it (`sudo apt-get install {name}`), or make `apt-get download {name}` work "
                "(run `apt-get update` first on a fresh machine).")
        download = Path(tempfile.mkdtemp(dir=target.parent, prefix=".download."))
        try:
            try:
                done = subprocess.run(["apt-get", "download", name], cwd=download, capture_output=True, text=True)
            except FileNotFoundError:
                raise SourceMissing(f"Debian package {name} is needed, but this machine has no apt-get. {hint}") from None
            debs = list(download.glob("*.deb"))
            if done.returncode != 0 or not debs:
                raise SourceMissing(f"could not fetch Debian package {name} (apt-get said: "
                                    f"{done.stderr.strip()[-300:] or 'nothing'}). {hint}")
            with atomic_dir(target) as tmp:
                subprocess.run(["dpkg", "-x", str(debs[0]), str(tmp)], check=True, capture_output=True)
                if not (tmp / wanted).exists():
                    raise SourceMissing(f"{debs[0].name} has no {wanted}; {hint}")
                (tmp / ".complete").write_text(debs[0].name + "\n")
        finally:
            shutil.rmtree(download, ignore_errors=True)
    return target


def npm_package(name: str, version: str, keep=lambda member: True) -> Path:
    """The ``package/`` folder of npm package ``name@version``, fetched once
    with ``npm pack`` into the cache; ``keep(member_name)`` picks the files to
    unpack (the emoji packages ship sheets we do not need)."""
    target = cache_dir("sources", "npm") / f"{name}-{version}"
    if (target / ".complete").exists():
        return target / "package"
    with locked(target):
        if (target / ".complete").exists():
            return target / "package"
        download = Path(tempfile.mkdtemp(dir=target.parent, prefix=".download."))
        hint = f"Check that the npm registry is reachable, or run `npm pack {name}@{version}` yourself."
        try:
            try:
                done = subprocess.run(["npm", "pack", "--silent", f"{name}@{version}"], cwd=download,
                                      capture_output=True, text=True)
            except FileNotFoundError:
                raise SourceMissing(f"npm package {name}@{version} is needed, but this machine has no npm. "
                                    "Install Node.js (`sudo apt-get install npm`).") from None
            archives = list(download.glob("*.tgz"))
            if done.returncode != 0 or not archives:
                raise SourceMissing(f"could not fetch npm package {name}@{version} (npm said: "
                                    f"{done.stderr.strip()[-300:] or 'nothing'}). {hint}")
            with atomic_dir(target) as tmp, tarfile.open(archives[0]) as tar:
                members = [m for m in tar.getmembers() if m.isfile() and keep(m.name)]
                tar.extractall(tmp, members=members, filter="data")
                (tmp / ".complete").write_text(f"{name}@{version}\n")
        finally:
            shutil.rmtree(download, ignore_errors=True)
    return target / "package"


# -------------------------------------------------------------- containers
@dataclass
class EmojiSplit:
    """Pictures of emoji and their text. ``labels[i]`` is the emoji's index in
    ``EmojiData.names`` (the same emoji has the same label in every style)."""
    images: torch.Tensor      # (N, 3, S, S) float in [0, 1]
    labels: torch.Tensor      # (N,) long: which emoji
    texts: list[str]          # the Unicode name, e.g. "grinning face"
    groups: list[str]         # e.g. "Smileys & Emotion"
    subgroups: list[str]      # e.g. "face-smiling"
    styles: list[str]         # "noto", "twitter" or "google"
    chars: list[str]          # the emoji itself

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class EmojiData:
    """Three fixed splits of emoji pictures; ``names`` lists every emoji once."""
    held_out: str
    names: tuple[str, ...]
    group_names: tuple[str, ...]
    train: EmojiSplit
    dev: EmojiSplit
    test: EmojiSplit
    info: dict = field(default_factory=dict)

    def split(self, name: str) -> EmojiSplit:
        if name not in SPLITS:
            raise LightKDError(f"no split {name!r}; the splits are {', '.join(SPLITS)}")
        return getattr(self, name)


# ------------------------------------------------------------------- emoji
def _emoji_list() -> list[dict]:
    """Unicode's fully-qualified emoji without skin tones, in Unicode's order."""
    path = debian_package("unicode-data", EMOJI_TEST) / EMOJI_TEST
    rows, group, subgroup = [], None, None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif "; fully-qualified" in line:
            code, rest = line.split(";", 1)
            char, _version, name = rest.split("#", 1)[1].strip().split(" ", 2)
            if "skin tone" not in name:
                key = "-".join(c.lower() for c in code.split() if c != "FE0F")
                rows.append({"key": key, "char": char, "name": name, "group": group, "subgroup": subgroup})
    return rows


def _square(im, size: int) -> np.ndarray:
    """An RGBA picture centred on a white square, resized to size x size RGB uint8."""
    from PIL import Image
    side = max(im.size)
    canvas = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    canvas.alpha_composite(im.convert("RGBA"), ((side - im.size[0]) // 2, (side - im.size[1]) // 2))
    return np.asarray(canvas.convert("RGB").resize((size, size), Image.Resampling.LANCZOS))


def _render_noto(rows: list[dict], size: int) -> tuple[np.ndarray, np.ndarray, str]:
    from PIL import Image, ImageDraw, ImageFont
    font_path = debian_package("fonts-noto-color-emoji", NOTO_FONT) / NOTO_FONT
    try:
        font = ImageFont.truetype(str(font_path), 109, layout_engine=ImageFont.Layout.RAQM)
    except (ImportError, KeyError, OSError) as e:  # no libraqm: sequences would not join into one glyph
        raise SourceMissing(f"rendering Noto emoji needs Pillow with libraqm ({e}); "
                            "install Pillow's wheel from PyPI, or use style='twitter'.") from None
    one = font.getlength("\U0001F600")
    images, ok = [], []
    for row in rows:
        # a sequence the font cannot join renders as several glyphs: left out
        ok.append(font.getlength(row["char"]) <= 1.1 * one)
        box = font.getbbox(row["char"])
        im = Image.new("RGBA", (max(box[2], 1), max(box[3], 1)), (255, 255, 255, 0))
        ImageDraw.Draw(im).text((0, 0), row["char"], font=font, embedded_color=True)
        images.append(_square(im, size))
    digest = hashlib.sha1(font_path.read_bytes()).hexdigest()[:10]
    return np.stack(images), np.array(ok), f"Noto Color Emoji font {digest}"


def _npm_images(rows: list[dict], style: str, size: int) -> tuple[np.ndarray, np.ndarray, str]:
    from PIL import Image
    name = f"emoji-datasource-{style}"
    folder = npm_package(name, EMOJI_NPM_VERSION,
                         keep=lambda m: m == "package/emoji.json" or m.startswith(f"package/img/{style}/64/"))
    table = json.loads((folder / "emoji.json").read_text(encoding="utf-8"))
    by_key = {e["unified"].lower().replace("-fe0f", ""): e for e in table}
    images, ok = [], []
    for row in rows:
        entry = by_key.get(row["key"])
        path = folder / "img" / style / "64" / entry["image"] if entry else None
        ok.append(bool(entry and entry.get(f"has_img_{style}") and path.exists()))
        images.append(_square(Image.open(path), size) if ok[-1] else np.full((size, size, 3), 255, np.uint8))
    return np.stack(images), np.array(ok), f"npm {name}@{EMOJI_NPM_VERSION}"


def _emoji_pixels(style: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (1870, S, S, 3) pictures of every emoji in one style, and which exist; cached
    under a name that includes a hash of Unicode's list (another version, another file)."""
    rows = _emoji_list()
    digest = hashlib.sha1(" ".join(r["key"] for r in rows).encode()).hexdigest()[:8]
    cached = cache_dir("data", "emoji") / f"{style}_{size}_{digest}.npz"
    keys = np.array([r["key"] for r in rows])

    def build() -> bytes:
        pixels, ok, origin = _render_noto(rows, size) if style == "noto" else _npm_images(rows, style, size)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, pixels=pixels, ok=ok, keys=keys, origin=np.array(origin))
        return buffer.getvalue()

    def decode(data: bytes):
        with np.load(io.BytesIO(data)) as z:  # a garbled member fails the zip's CRC check
            pixels, ok = z["pixels"], z["ok"]
            if pixels.shape != (len(rows), size, size, 3) or pixels.dtype != np.uint8 or ok.shape != (len(rows),) \
                    or not np.array_equal(z["keys"], keys):
                raise ValueError(f"holds {pixels.shape} pictures, not {len(rows)} emoji of {size} x {size}")
            return pixels, ok

    return cached_file(cached, build, decode)


def _check_size(size) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or not 8 <= size <= 128:
        raise LightKDError(f"size must be an integer number of pixels from 8 to 128, got {size!r}")


def emoji_split_indices(held_out: str = "emoji") -> dict[str, np.ndarray]:
    """Which emoji (indices into Unicode's list) each split holds, fixed.

    ``"emoji"``: 80 / 10 / 10 within each group; ``"style"``: all emoji in
    train, two halves of each group in dev and test."""
    if held_out not in ("emoji", "style"):
        raise LightKDError(f"held_out must be 'emoji' or 'style', got {held_out!r}")
    rows = _emoji_list()
    seed, cuts = (EMOJI_GROUP_SEED, (0.8, 0.9)) if held_out == "emoji" else (STYLE_HALF_SEED, (0.0, 0.5))
    rng = np.random.default_rng(seed)
    out = {s: [] for s in SPLITS}
    for group in dict.fromkeys(r["group"] for r in rows):
        idx = rng.permutation([i for i, r in enumerate(rows) if r["group"] == group])
        a, b = round(cuts[0] * len(idx)), round(cuts[1] * len(idx))
        for s, part in zip(SPLITS, (idx[:a], idx[a:b], idx[b:])):
            out[s].extend(part.tolist())
    if held_out == "style":
        out["train"] = list(range(len(rows)))
    return {s: np.array(sorted(v)) for s, v in out.items()}


def load_emoji(split: str | None = None, *, style: str | None = None, size: int = 32,
               held_out: str = "emoji"):
    """Emoji pictures with their Unicode names (an offline image-text data set).

    ``held_out="emoji"`` (default): one art ``style`` (default ``"noto"``;
    ``"twitter"``, ``"google"``), split by emoji 80 / 10 / 10 within each
    group. ``held_out="style"``: train = noto and google pictures of every
    emoji, dev / test = twitter pictures of two fixed halves of the emoji
    (``style`` must stay None). Only emoji that all three styles draw are
    kept, so both splits cover the same emoji.

    Returns an ``EmojiData`` (``split=None``) or one ``EmojiSplit``: images
    (N, 3, size, size) float in [0, 1], labels (index into ``names``), texts,
    groups, subgroups, styles, chars.
    """
    _check_size(size)
    if held_out not in ("emoji", "style"):
        raise LightKDError(f"held_out must be 'emoji' or 'style', got {held_out!r}")
    if split is not None and split not in SPLITS:
        raise LightKDError(f"split must be one of {', '.join(SPLITS)} or None, got {split!r}")
    if held_out == "style" and style is not None:
        raise LightKDError("held_out='style' fixes the styles (train noto + google, dev and test twitter); "
                           "leave style=None")
    style = "noto" if style is None and held_out == "emoji" else style
    if style is not None and style not in EMOJI_STYLES:
        raise LightKDError(f"unknown emoji style {style!r}; choose one of {', '.join(map(repr, EMOJI_STYLES))}")
    rows = _emoji_list()
    pixels, ok = {}, np.ones(len(rows), bool)
    for s in EMOJI_STYLES:  # the kept emoji do not depend on which style is asked for
        pixels[s], have = _emoji_pixels(s, size)
        ok &= have
    kept = np.flatnonzero(ok)
    label_of = {int(i): k for k, i in enumerate(kept)}  # emoji index -> label among kept emoji
    styles = {s: (style,) for s in SPLITS} if held_out == "emoji" else STYLE_SPLIT
    parts = {s: (styles[s], idx[ok[idx]]) for s, idx in emoji_split_indices(held_out).items()}

    def make(styles_: tuple, idx: np.ndarray) -> EmojiSplit:
        x = torch.from_numpy(np.concatenate([pixels[st][idx] for st in styles_])).permute(0, 3, 1, 2)
        drawn_by = [st for st in styles_ for _ in idx]
        idx = np.tile(idx, len(styles_))
        return EmojiSplit(x.float().div_(255), torch.tensor([label_of[int(i)] for i in idx], dtype=torch.long),
                          [rows[i]["name"] for i in idx], [rows[i]["group"] for i in idx],
                          [rows[i]["subgroup"] for i in idx], drawn_by, [rows[i]["char"] for i in idx])

    wanted = SPLITS if split is None else (split,)
    made = {s: make(*parts[s]) for s in wanted}
    if split is not None:
        return made[split]
    return EmojiData(held_out, tuple(rows[i]["name"] for i in kept),
                     tuple(dict.fromkeys(r["group"] for r in rows)), made["train"], made["dev"], made["test"],
                     info={"emoji": len(kept), "left_out": len(rows) - len(kept), "size": size,
                           "styles": {s: STYLE_SPLIT[s] for s in SPLITS} if held_out == "style" else style})


# --------------------------------------------------------------------- VQA
@dataclass
class VQASplit:
    """Questions about pictures: question ``q`` asks about ``images[image_index[q]]``."""
    images: torch.Tensor       # (N_images, 3, 64, 64) float in [0, 1]
    image_ids: list[int]       # easy-VQA's image ids
    questions: list[str]
    answers: torch.Tensor      # (N_questions,) long, index into VQAData.answer_names
    image_index: torch.Tensor  # (N_questions,) long, row of ``images``

    def __len__(self) -> int:
        return len(self.questions)


@dataclass
class VQAData:
    answer_names: tuple[str, ...]
    train: VQASplit
    dev: VQASplit
    test: VQASplit
    info: dict = field(default_factory=dict)

    @property
    def num_answers(self) -> int:
        return len(self.answer_names)

    def answer_id(self, answer: str) -> int:
        """The class index of an answer; a clear error for one outside the vocabulary."""
        if answer not in self.answer_names:
            raise LightKDError(f"answer {answer!r} is not in the answer vocabulary "
                               f"({', '.join(self.answer_names)})")
        return self.answer_names.index(answer)

    def split(self, name: str) -> VQASplit:
        if name not in SPLITS:
            raise LightKDError(f"no split {name!r}; the splits are {', '.join(SPLITS)}")
        return getattr(self, name)


def _easy_vqa_folder() -> Path:
    root = registry_package(*EASY_VQA)
    folder = root / "easy_vqa" / "data"
    if not (folder / "answers.txt").exists():
        raise SourceMissing(f"{root} has no easy_vqa/data/answers.txt; reinstall it with "
                            f"`pip install --no-deps {EASY_VQA[0]}=={EASY_VQA[1]}`")
    return folder


def _easy_vqa_part(folder: Path, part: str) -> tuple[np.ndarray, list[int], list]:
    """uint8 images (N, 64, 64, 3) sorted by id, their ids, and the question triples; cached."""
    cached = cache_dir("data", "easy_vqa") / f"{part}_images.npy"
    questions = json.loads((folder / part / "questions.json").read_text())
    ids = sorted(int(p.stem) for p in (folder / part / "images").glob("*.png"))

    def build() -> bytes:
        from PIL import Image
        pixels = np.stack([np.asarray(Image.open(folder / part / "images" / f"{i}.png").convert("RGB")) for i in ids])
        buffer = io.BytesIO()
        np.save(buffer, pixels)
        return buffer.getvalue()

    def decode(data: bytes) -> np.ndarray:
        pixels = np.load(io.BytesIO(data))
        if pixels.dtype != np.uint8 or pixels.shape != (len(ids), 64, 64, 3):
            raise ValueError(f"holds {pixels.dtype} {pixels.shape}, not {len(ids)} pictures of 64 x 64 x 3")
        return pixels

    return cached_file(cached, build, decode), ids, questions


def load_vqa(split: str | None = None):
    """easy-VQA: returns ``VQAData`` (``split=None``) or one ``VQASplit``.

    Answers are indices into ``answer_names`` (13 words, easy-VQA's order).
    Train / dev / test: easy-VQA's training images minus a fixed 10% of them
    (dev, with all their questions), and its test set.
    """
    if split is not None and split not in SPLITS:
        raise LightKDError(f"split must be one of {', '.join(SPLITS)} or None, got {split!r}")
    folder = _easy_vqa_folder()
    answers = tuple(a.strip() for a in (folder / "answers.txt").read_text().splitlines() if a.strip())
    data = VQAData(answers, None, None, None, info={"origin": f"PyPI {EASY_VQA[0]}=={EASY_VQA[1]}"})

    def make(pixels, ids, triples, keep_ids) -> VQASplit:
        rows = [k for k, i in enumerate(ids) if i in keep_ids]
        row_of = {ids[k]: r for r, k in enumerate(rows)}
        qs = [q for q in triples if q[2] in row_of]
        return VQASplit(torch.from_numpy(pixels[rows]).permute(0, 3, 1, 2).float().div_(255),
                        [ids[k] for k in rows], [q[0] for q in qs],
                        torch.tensor([data.answer_id(q[1]) for q in qs], dtype=torch.long),
                        torch.tensor([row_of[q[2]] for q in qs], dtype=torch.long))

    if split in (None, "train", "dev"):
        pixels, ids, triples = _easy_vqa_part(folder, "train")
        order = np.random.default_rng(VQA_DEV_SEED).permutation(ids)
        dev_ids = set(int(i) for i in order[:len(ids) // 10])
        if split in (None, "train"):
            data.train = make(pixels, ids, triples, set(ids) - dev_ids)
        if split in (None, "dev"):
            data.dev = make(pixels, ids, triples, dev_ids)
    if split in (None, "test"):
        pixels, ids, triples = _easy_vqa_part(folder, "test")
        data.test = make(pixels, ids, triples, set(ids))
    return data if split is None else data.split(split)
