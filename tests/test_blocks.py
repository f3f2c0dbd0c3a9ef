"""lightkd.blocks, each block once: model anatomy, attention masks, the SVD
factorisation, the post-norm BERT layer, students from a teacher; and bad
input answered by a LightKDError that names the argument."""
import numpy as np
import pytest
import torch

from conftest import make_tiny_batch as tiny_batch, make_tiny_bert as tiny_bert
from lightkd import blocks, mobilebert as mb, models
from lightkd.common import LightKDError


# -------------------------------------------------------------- anatomy
def tiny_models():
    """BERT, MobileBERT (transformers' and ours) and ViT (transformers' and ours), two or three layers each."""
    from transformers import (MobileBertConfig, MobileBertForSequenceClassification, ViTConfig,
                              ViTForImageClassification)
    torch.manual_seed(0)
    hf_mobile = MobileBertForSequenceClassification(MobileBertConfig(
        vocab_size=100, hidden_size=32, intra_bottleneck_size=8, num_attention_heads=4, intermediate_size=16,
        embedding_size=8, num_hidden_layers=2, max_position_embeddings=64))
    ours_mobile = mb.MobileBert(mb.Config(vocab_size=100, num_hidden_layers=3, hidden_size=32, intra_size=8,
                                          num_attention_heads=4, intermediate_size=16, num_ffn=2, embedding_size=8,
                                          max_position_embeddings=64))
    hf_vit = ViTForImageClassification(ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=16,
                                                 num_hidden_layers=2, num_attention_heads=2, intermediate_size=32))
    ours_vit = models.VisionTransformer(models.ViTConfig(dim=16, depth=3, heads=2))
    return {"bert": (tiny_bert(layers=3), "bert.encoder.layer", 3),
            "mobilebert (transformers)": (hf_mobile, "mobilebert.encoder.layer", 2),
            "mobilebert (lightkd)": (ours_mobile, "encoder.layer", 3),
            "vit (transformers)": (hf_vit, "vit.encoder.layer", 2),
            "vit (lightkd)": (ours_vit, "blocks", 3)}


def test_anatomy_finds_the_layers_of_bert_mobilebert_and_vit():
    for name, (model, path, n) in tiny_models().items():
        found, layers = blocks.encoder_layers(model)
        assert (found, len(layers), blocks.num_layers(model)) == (path, n, n), name
        assert layers is blocks.get_module(model, path), name
    bert = tiny_bert(layers=3, heads=4)
    assert blocks.head_grid(bert) == (3, 4)
    query, key, heads = blocks.attention_projections(bert, -1)
    last = bert.bert.encoder.layer[2].attention.self
    assert query is last.query and key is last.key and heads == 4


def test_anatomy_bad_input():
    bert = tiny_bert(layers=3)
    with pytest.raises(LightKDError, match="layer"):
        blocks.attention_projections(bert, 3)                       # layers are 0..2
    with pytest.raises(LightKDError, match="layer"):
        blocks.attention_projections(bert, -4)
    with pytest.raises(LightKDError, match="query/key"):
        blocks.attention_projections(models.VisionTransformer(models.ViTConfig(dim=16, depth=2, heads=2)), 0)
    with pytest.raises(LightKDError, match="no module 'bert.nothing'"):
        blocks.get_module(bert, "bert.nothing")
    with pytest.raises(LightKDError, match="transformer layers"):
        blocks.encoder_layers(torch.nn.Linear(2, 2))


# ---------------------------------------------------------------- masks
def test_masks_against_a_hand_computation():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    low = torch.finfo(torch.float32).min
    additive = blocks.additive_key_mask(mask, torch.float32)
    assert additive.shape == (2, 1, 1, 3) and additive.dtype == torch.float32
    assert torch.equal(additive.flatten(1), torch.tensor([[0.0, 0.0, low], [0.0, low, low]]))
    half = blocks.additive_key_mask(mask.bool(), torch.float16)
    assert half.dtype == torch.float16 and half[0, 0, 0, 2] == torch.finfo(torch.float16).min
    assert torch.equal(blocks.key_mask(mask).flatten(1), torch.tensor([[True, True, False], [True, False, False]]))
    scores = torch.randn(2, 4, 3, 3)                                # added before the softmax: padding gets nothing
    probs = (scores + additive).softmax(-1)
    assert torch.equal(probs[1, ..., 1:], torch.zeros(4, 3, 2))
    assert torch.allclose(probs[0, ..., :2], scores[0, ..., :2].softmax(-1))


@pytest.mark.parametrize("bad", [torch.ones(2, 0), torch.ones(0, 3), torch.ones(3), torch.ones(2, 1, 3), [1, 0]])
def test_masks_bad_input(bad):
    with pytest.raises(LightKDError, match="attention_mask"):
        blocks.additive_key_mask(bad, torch.float32)
    with pytest.raises(LightKDError, match="attention_mask"):
        blocks.key_mask(bad)


# ------------------------------------------------------------------ SVD
def test_low_rank_is_the_best_rank_k_approximation():
    torch.manual_seed(0)
    weight = torch.randn(12, 7)
    left, right = blocks.low_rank(weight, 7)                       # full rank: the matrix itself
    assert left.shape == (12, 7) and right.shape == (7, 7)
    assert torch.allclose(left @ right, weight, atol=1e-5)
    assert torch.allclose(right @ right.T, torch.eye(7), atol=1e-5)  # orthonormal rows: a principal basis
    U, S, Vh = np.linalg.svd(weight.double().numpy(), full_matrices=False)
    for k in (1, 3, 6):
        left, right = blocks.low_rank(weight, k)
        reference = (U[:, :k] * S[:k]) @ Vh[:k]                      # Eckart-Young, in float64
        assert np.allclose((left @ right).numpy(), reference, atol=1e-5)
        error = np.linalg.norm((left @ right).numpy() - weight.numpy())
        assert np.isclose(error, np.sqrt((S[k:] ** 2).sum()), rtol=1e-4)   # what the dropped directions held
        other = torch.randn(12, k) @ torch.linalg.lstsq(torch.randn(12, k), weight).solution
        assert error < (other - weight).norm()                     # any other rank-k matrix does worse
    tall = blocks.low_rank(weight.T, 2)                            # either orientation
    assert tall[0].shape == (7, 2) and tall[1].shape == (2, 12)


@pytest.mark.parametrize("rank", [0, 8, -1, 2.0, True])
def test_low_rank_bad_rank(rank):
    with pytest.raises(LightKDError, match="rank"):
        blocks.low_rank(torch.randn(8, 5), rank)


@pytest.mark.parametrize("weight", [torch.randn(4), torch.randn(2, 3, 4), torch.randn(0, 3), "table"])
def test_low_rank_bad_weight(weight):
    with pytest.raises(LightKDError, match="weight"):
        blocks.low_rank(weight, 1)


# --------------------------------------------------------- the BERT layer
def test_attention_with_probs_equals_torch_attention():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 5, 4), torch.randn(3, 2, 5, 4), torch.randn(3, 2, 5, 4)
    mask = blocks.additive_key_mask(torch.tensor([[1] * 5, [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]]), torch.float32)
    context, probs = blocks.attention_with_probs(q, k, v, mask)
    assert torch.allclose(context, torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask),
                          atol=1e-6)
    assert torch.allclose(probs.sum(-1), torch.ones(3, 2, 5)) and torch.equal(probs[2, ..., 1:], torch.zeros(2, 5, 4))


def test_bert_layer_equals_transformers_bert_layer():
    bert = tiny_bert(layers=1, hidden=32, heads=4)
    theirs = bert.bert.encoder.layer[0]
    for p in theirs.parameters():                                   # not the init's zeros and ones: every weight counts
        torch.nn.init.normal_(p, std=0.2)
    ours = blocks.BertLayer(32, 4, 64).load_bert_layer(theirs).eval()
    batch = tiny_batch(b=3, n=7)
    x, mask = torch.randn(3, 7, 32), batch["attention_mask"]        # sentence 0 ends in padding
    with torch.no_grad():
        got, probs = ours(x, blocks.additive_key_mask(mask, x.dtype))
        ref = theirs(x, attention_mask=bert.get_extended_attention_mask(mask, mask.shape), output_attentions=True)
    assert torch.allclose(got, ref[0], atol=1e-5) and torch.allclose(probs, ref[1], atol=1e-6)
    assert torch.equal(probs[0, ..., 4:], torch.zeros(4, 7, 3))
    # the two halves, one after the other, are the layer (ALBERT ties them apart)
    attention, ffn = blocks.SelfAttention(32, 4), blocks.FeedForward(32, 64)
    attention.load_state_dict({k: v for k, v in ours.state_dict().items() if not k.startswith("ffn_")})
    ffn.load_state_dict({k: v for k, v in ours.state_dict().items() if k.startswith("ffn_")})
    with torch.no_grad():
        half, _ = attention(x, blocks.additive_key_mask(mask, x.dtype))
        assert torch.equal(ffn(half), got)
    names = ("query", "key", "value", "attn_out", "attn_norm", "ffn_in", "ffn_out", "ffn_norm")
    assert list(ours.state_dict()) == [f"{n}.{p}" for n in names for p in ("weight", "bias")]   # what caches hold


def test_bert_layer_bad_input():
    with pytest.raises(LightKDError, match="heads"):
        blocks.BertLayer(30, 4, 64)
    with pytest.raises(LightKDError, match="act"):
        blocks.FeedForward(32, 64, act="swish")
    with pytest.raises(LightKDError, match="sizes"):
        blocks.BertLayer(16, 4, 64).load_bert_layer(tiny_bert(layers=1, hidden=32).bert.encoder.layer[0])


# ------------------------------------------------- students from a teacher
def test_student_from_teacher_keeps_the_chosen_layers():
    teacher = tiny_bert(6)
    student = blocks.student_from_teacher(teacher, [0, 2, 4])
    assert student.config.num_hidden_layers == 3 and teacher.config.num_hidden_layers == 6
    t, s = teacher.state_dict(), student.state_dict()
    layer = "bert.encoder.layer.{}."
    for k_s, k_t in ((0, 0), (1, 2), (2, 4)):
        ours = {k[len(layer.format(k_s)):]: v for k, v in s.items() if k.startswith(layer.format(k_s))}
        theirs = {k[len(layer.format(k_t)):]: v for k, v in t.items() if k.startswith(layer.format(k_t))}
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert torch.equal(s["classifier.weight"], t["classifier.weight"])
    assert torch.equal(s["bert.embeddings.word_embeddings.weight"], t["bert.embeddings.word_embeddings.weight"])
    assert student.bert.encoder.layer[2].attention.self.layer_idx == 2
    student.bert.encoder.layer[0].attention.self.query.weight.data += 1   # the student is its own copy
    assert torch.equal(teacher.state_dict()["bert.encoder.layer.0.attention.self.query.weight"],
                       t["bert.encoder.layer.0.attention.self.query.weight"])
    batch = tiny_batch()                                            # its first layer computes the teacher's
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        fresh = blocks.student_from_teacher(teacher, [0, 2, 4])
        assert torch.allclose(fresh(**inputs, output_hidden_states=True).hidden_states[1],
                              teacher(**inputs, output_hidden_states=True).hidden_states[1], atol=1e-6)
    rand = blocks.student_from_teacher(teacher, [0, 2, 4], init="random", seed=1)
    assert not torch.equal(rand.state_dict()["classifier.weight"], t["classifier.weight"])
    assert blocks.student_from_teacher(teacher, n_layers=2).config.num_hidden_layers == 2
    vit = models.VisionTransformer(models.ViTConfig(dim=16, depth=4, heads=2))
    small = blocks.student_from_teacher(vit, [1, 3])
    assert len(small.blocks) == 2 and small.config.depth == 2 and torch.equal(
        small.blocks[1].attn.qkv.weight, vit.blocks[3].attn.qkv.weight)


def test_student_from_teacher_bad_layers():
    teacher = tiny_bert(4)
    for layers, match in (([0, 4], "no layer 4"), ([0, -1], "no layer -1"), ([1, 1], "repeat"), ([], "non-empty"),
                          (3, "non-empty"), ([0.5], "non-empty"), ([0, 1, 2, 3, 4], "no layer 4")):
        with pytest.raises(LightKDError, match=match):
            blocks.student_from_teacher(teacher, layers)
    with pytest.raises(LightKDError, match="init"):
        blocks.student_from_teacher(teacher, [0], init="zeros")
    with pytest.raises(LightKDError, match="n_student"):
        blocks.student_from_teacher(teacher, n_layers=5)


def test_spread_layers_and_its_exercise():
    assert blocks.spread_layers(12, 6) == [0, 2, 4, 6, 8, 10] and blocks.spread_layers(6, 3) == [0, 2, 4]
    assert blocks.spread_layers(5, 5) == [0, 1, 2, 3, 4] and blocks.spread_layers(7, 1) == [0]
    assert blocks.check_spread_layers(blocks.spread_layers, seed=0)
    assert not blocks.check_spread_layers(lambda n, m: list(range(m)), seed=0)
    for n_teacher, n_student in ((4, 5), (4, 0)):
        with pytest.raises(LightKDError, match="n_student"):
            blocks.spread_layers(n_teacher, n_student)


def test_keep_layers_in_place():
    model = tiny_bert(4)
    third = model.bert.encoder.layer[3]
    assert blocks.keep_layers(model, [3, 0]) is model
    assert model.bert.encoder.layer[0] is third and model.config.num_hidden_layers == 2
