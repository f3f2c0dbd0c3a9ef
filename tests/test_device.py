"""Device following: the method functions build their tensors beside the
model's or the input's, so they run on a GPU beside a ``.cuda()`` model.

No GPU is needed. Models and inputs go to the ``meta`` device: a meta
tensor has a shape and no data, and an op that mixes it with a CPU tensor
fails ("Tensor on device cpu is not on the expected device meta"), as one
that mixes CPU and CUDA tensors would. Where a function reads values
(``.item()``, ``if tensor``, ``.cpu()``), ``meta_reads`` answers those reads
with stand-in values; where it only has to hand its inputs to a model, a
fake model with a meta parameter checks they arrive on its device.
"""
import contextlib
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).parent))
from conftest import make_tiny_batch, make_tiny_bert  # noqa: E402

from lightkd import models, prune, quant, share, tinybert, vit, vlm  # noqa: E402
from lightkd.data import ImageSplit  # noqa: E402

META = torch.device("meta")


def on_meta(*tensors):
    return all(t.device == META for t in tensors)


@contextlib.contextmanager
def meta_reads(truth: bool = False):
    """Value reads of meta tensors answered by stand-ins: ``item()`` 0,
    ``bool()`` ``truth``, ``cpu()`` zeros of the same shape and dtype."""
    item, boolean, cpu, tolist = torch.Tensor.item, torch.Tensor.__bool__, torch.Tensor.cpu, torch.Tensor.tolist
    torch.Tensor.item = lambda t: 0 if t.is_meta else item(t)
    torch.Tensor.__bool__ = lambda t: truth if t.is_meta else boolean(t)
    torch.Tensor.cpu = lambda t, *a, **k: torch.zeros(t.shape, dtype=t.dtype) if t.is_meta else cpu(t, *a, **k)
    torch.Tensor.tolist = lambda t: torch.zeros(t.shape, dtype=t.dtype).tolist() if t.is_meta else tolist(t)
    try:
        yield
    finally:
        torch.Tensor.item, torch.Tensor.__bool__, torch.Tensor.cpu, torch.Tensor.tolist = item, boolean, cpu, tolist


class Reached(Exception):
    """Raised by a fake model once it has checked where its inputs are."""


class DeviceCheck(nn.Module):
    """A fake model on the meta device: its forward asserts that every tensor
    it is given is on the meta device, then stops the caller (``Reached``)."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(1, device=META))
        self.seen = []

    def forward(self, *args, **kwargs):
        tensors = [v for v in list(args) + list(kwargs.values()) if isinstance(v, torch.Tensor)]
        self.seen.append([t.device for t in tensors])
        assert tensors and on_meta(*tensors), f"inputs on {[t.device for t in tensors]}, model on meta"
        raise Reached


def meta_bert(layers=2):
    return make_tiny_bert(layers=layers).to(META)


# ------------------------------------------------------------------ prune
def test_prune_masks_follow_the_weights():
    model = meta_bert()
    for scope in ("global", "layer"):
        masks = prune.magnitude_masks(model, 0.5, scope)
        assert masks and on_meta(*masks.values())
    prune.apply_masks(model, masks)
    assert on_meta(prune.semi_structured_mask(torch.empty(4, 8, device=META)))


def test_head_importance_magnitude_and_gates_follow_the_model():
    model = meta_bert()
    batch = make_tiny_batch()                                 # CPU, as a DataLoader gives it
    with meta_reads():
        importance = prune.head_importance(model, [batch, batch])
    assert importance.shape == (2, 4) and on_meta(importance)
    assert on_meta(prune.head_magnitude(model))
    gates = prune.head_mask_gates(model, {0: [1], 1: [0, 2]})
    assert on_meta(gates)
    inputs = {k: v.to(META) for k, v in batch.items() if k in ("input_ids", "attention_mask")}
    with prune.head_gates(model, gates):
        assert on_meta(model(**inputs).logits)
    with prune.head_gates(model, prune.head_mask_gates(make_tiny_bert(layers=2), {0: [1]})):  # CPU gates
        assert on_meta(model(**inputs).logits)


def test_trimmed_vocabulary_lookup_follows_the_model():
    small = prune.trim_vocabulary(meta_bert(), list(range(0, 60)), unk_id=1)
    assert on_meta(small.row_of)
    out = small(input_ids=torch.randint(0, 100, (2, 5)).to(META), attention_mask=torch.ones(2, 5, device=META))
    assert on_meta(out.logits)


# -------------------------------------------------------------------- vit
def test_augment_follows_the_images():
    params = vit.augmentation_params(3, epoch=1, seed=0, max_shift=2)  # CPU draws, as stored teachers need
    out = vit.augment(torch.empty(3, 1, 8, 8, device=META), params["shift_y"], params["shift_x"], params["flip"])
    assert out.shape == (3, 1, 8, 8) and on_meta(out)


def test_augment_on_the_cpu_is_unchanged():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(4, 1, 6, 6, generator=g)
    p = vit.augmentation_params(4, epoch=0, seed=3, max_shift=2)
    out = vit.augment(images, p["shift_y"], p["shift_x"], p["flip"])
    pad = int(max(p["shift_y"].abs().max(), p["shift_x"].abs().max()))
    padded = torch.nn.functional.pad(images, (pad,) * 4)
    for i in range(4):
        y, x = pad - int(p["shift_y"][i]), pad - int(p["shift_x"][i])
        expected = padded[i, :, y:y + 6, x:x + 6]
        assert torch.equal(out[i], expected.flip(-1) if p["flip"][i] else expected)


def test_teacher_views_and_head_evaluation_move_the_inputs():
    split = ImageSplit(torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 0, 1]))
    teacher = DeviceCheck()
    with pytest.raises(Reached):
        vit.teacher_logits_for_views(teacher, split, epochs=1, seed=0, max_shift=1)
    student = models.VisionTransformer(vit.ViTConfig(image_size=8, patch_size=4, dim=8, depth=1, heads=2,
                                                     distillation_token=True, num_classes=2)).to(META)
    batch = {"pixel_values": split.images, "labels": split.labels, "index": torch.arange(4)}
    with meta_reads(truth=True):                              # the ViT's own checks: finite pixels
        result = vit.evaluate_heads(student, [batch])
    assert set(result) == {"cls", "dist", "both"}


# ------------------------------------------------------------------ quant
def test_calibration_moves_the_batches():
    fake = DeviceCheck()
    fake.linear = quant.QuantLinear.from_linear(nn.Linear(4, 4, device=META))
    assert on_meta(fake.linear.act_max, fake.linear.observed)
    with pytest.raises(Reached):
        quant.calibrate(fake, [make_tiny_batch()])
    assert fake.seen


# ------------------------------------------------------------------ share
def tiny_vit():
    return models.VisionTransformer(vit.ViTConfig(image_size=8, patch_size=4, dim=8, depth=2, heads=2,
                                                  num_classes=3))


def test_minivit_observations_follow_the_model():
    model = tiny_vit().to(META)
    batch = {"pixel_values": torch.rand(2, 1, 8, 8), "labels": torch.tensor([0, 2]), "index": torch.arange(2)}
    with meta_reads(truth=True):                              # the ViT's own checks: finite pixels
        norms = share.layer_gradient_norms(model, batch)
        similarity = share.consecutive_similarity(model, torch.rand(2, 1, 8, 8))
    assert norms.shape == (2,) and on_meta(norms, similarity)


def test_built_models_follow_their_source(monkeypatch):
    """Models built from another are made on the CPU (so the init draws are the
    same) and then moved beside their source: ``model_device`` says where."""
    monkeypatch.setattr(share, "model_device", lambda m: META)
    monkeypatch.setattr(vlm, "model_device", lambda m: META)
    config = share.MiniViTConfig.from_vit(tiny_vit().config, repeats=2)
    assert on_meta(*share.MiniViT.from_vit(tiny_vit(), config).parameters())
    emb = share.FactorizedEmbedding.from_weight(torch.randn(20, 8), 4)
    assert emb.embed.weight.device.type == "cpu"                # beside its CPU table
    from transformers import BertConfig, BertModel
    bert = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=32, max_position_embeddings=20), add_pooling_layer=False)
    fusion = vlm.FusionVLM.from_bert(bert, visual_dim=6, num_answers=5)
    assert on_meta(*fusion.parameters())
    monkeypatch.setattr(vlm, "model_device", lambda m: torch.device("cpu"))
    student = vlm.minivlm_student(vlm.FusionVLM.from_bert(bert, 6, 5), visual_dim=6, n_layers=1)
    monkeypatch.setattr(vlm, "model_device", lambda m: META)
    assert on_meta(*vlm.minivlm_student(student, visual_dim=6, n_layers=1).parameters())


# -------------------------------------------------------------------- vlm
def tiny_fusion():
    from transformers import BertConfig, BertModel
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=32, max_position_embeddings=20, attn_implementation="eager"),
                     add_pooling_layer=False)
    return vlm.FusionVLM.from_bert(bert, visual_dim=6, num_answers=5).eval()


def vqa_batches(n=6, targets=None):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 50, (n, 5), generator=g)
    mask = torch.ones(n, 5, dtype=torch.long)
    mask[::2, 3:] = 0
    return vlm.VQABatches(torch.randn(3, 4, 6, generator=g), torch.arange(n) % 3, ids, mask,
                          torch.randint(0, 5, (n,), generator=g), batch_size=4, targets=targets)


def test_teacher_targets_and_distilvlm_loss_follow_the_devices():
    teacher = tiny_fusion().to(META)
    teacher.check_inputs = lambda *a: None                     # its value checks read data a meta tensor lacks
    with meta_reads():
        targets = vlm.teacher_targets(teacher, vqa_batches(), student_visual=4, layers=[1, 2])
    assert all(t.device.type == "cpu" for t in targets.values())   # stored beside the batches' rows
    assert targets["hidden"].shape == (6, 3, 9, 16)
    student = tiny_fusion().to(META)
    student.check_inputs = lambda *a: None
    batch = next(iter(vqa_batches(targets=targets)))
    batch = {k: v.to(META) if k != "index" else v for k, v in batch.items()}
    out = student(batch["visual"], batch["input_ids"], batch["attention_mask"], output_hidden_states=True,
                  output_attentions=True)
    with meta_reads(truth=False):                             # no labelled question: ce is 0 * logits
        loss, logs = vlm.distilvlm_loss(out, batch)
    assert on_meta(loss) and set(logs) == {"ce", "kd", "hidden", "attention"}


# --------------------------------------------------------------- tinybert
class WordTokenizer:
    mask_token, mask_token_id = "[MASK]", 3

    def tokenize(self, word):
        return [word]

    def __call__(self, text, return_tensors=None, truncation=False):
        ids = [self.mask_token_id if w == self.mask_token else 10 for w in text.split()]
        return {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}


def test_augmenter_mlm_gets_its_inputs_on_its_device():
    mlm = DeviceCheck()
    augmenter = tinybert.Augmenter(WordTokenizer(), ["cat", "dog"], torch.eye(2), k=1, copies=1, mlm=mlm)
    with pytest.raises(Reached):
        augmenter._mlm_candidates(["the", "cat", "sat"], 1)
    assert mlm.seen == [[META, META]]
