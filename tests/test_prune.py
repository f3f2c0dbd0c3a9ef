"""Unit tests for lightkd.prune on tiny random BERTs (fast, offline)."""
import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune
from transformers import BertConfig, BertForSequenceClassification

from lightkd import prune
from lightkd.common import LightKDError


def tiny_bert(layers=2, heads=4, seed=0):
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=64, max_position_embeddings=32, num_labels=2)
    return BertForSequenceClassification(config).eval()


def batch(n=3, t=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 100, (n, t), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.randint(0, 2, (n,), generator=g),
            "index": torch.arange(n)}


# ------------------------------------------------------------ masks
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9])
def test_magnitude_mask_matches_torch_prune(sparsity):
    lin = nn.Linear(17, 13)
    mask = prune.magnitude_mask(lin.weight, sparsity)
    torch_prune.l1_unstructured(lin, "weight", amount=sparsity)
    assert torch.equal(mask, lin.weight_mask.bool())


def test_global_masks_match_torch_global_unstructured():
    model = tiny_bert()
    names = prune.prunable_linears(model)
    masks = prune.global_magnitude_masks(model, names, 0.6)
    ref = copy.deepcopy(model)
    params = [(ref.get_submodule(n), "weight") for n in names]
    torch_prune.global_unstructured(params, pruning_method=torch_prune.L1Unstructured, amount=0.6)
    for n in names:
        assert torch.equal(masks[n], ref.get_submodule(n).weight_mask.bool())
    assert abs(prune.sparsity_of(masks) - 0.6) < 1e-3
    # a global threshold does not give every matrix the same sparsity
    per = prune.sparsity_by_module(masks).values()
    assert max(per) - min(per) > 0.01


def test_layerwise_masks_have_equal_sparsity_and_apply_zeroes():
    model = tiny_bert()
    masks = prune.magnitude_masks(model, 0.5, scope="layer")
    assert all(abs(s - 0.5) < 0.01 for s in prune.sparsity_by_module(masks).values())
    prune.apply_masks(model, masks)
    recovered = prune.masks_from_zeros(model)
    assert all(torch.equal(recovered[n], masks[n]) for n in masks)
    assert "classifier" not in " ".join(masks) and "embeddings" not in " ".join(masks)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, "half", None, True])
def test_bad_sparsity(bad):
    with pytest.raises(LightKDError, match="sparsity"):
        prune.magnitude_mask(torch.randn(4, 4), bad)
    with pytest.raises(LightKDError, match="sparsity"):
        prune.magnitude_masks(tiny_bert(), bad)


def test_module_without_weight():
    model = tiny_bert()
    with pytest.raises(LightKDError, match="no weight"):
        prune.module_weight(model, "bert.encoder.layer.0.attention.self.dropout")
    with pytest.raises(LightKDError, match="no submodule"):
        prune.module_weight(model, "bert.nothing")
    with pytest.raises(LightKDError, match="scope"):
        prune.magnitude_masks(model, 0.5, scope="row")
    with pytest.raises(LightKDError, match="shape"):
        prune.apply_masks(model, {"classifier": torch.ones(3, 3, dtype=torch.bool)})


def test_keep_masks_survives_training_steps():
    from lightkd import train
    model = tiny_bert()
    masks = prune.magnitude_masks(model, 0.7)
    batches = [batch(seed=s) for s in range(3)]
    prune.freeze_embeddings(model)
    prune.apply_masks(model, masks)
    train.fit(model, batches, None, max_steps=3, lr=1e-2, on_step=prune.keep_masks(masks), progress=False, bf16=False)
    assert abs(prune.sparsity_of(prune.masks_from_zeros(model)) - 0.7) < 1e-3
    assert not model.bert.embeddings.word_embeddings.weight.requires_grad


def test_rewind_and_random_reinit():
    model, init = tiny_bert(seed=1), tiny_bert(seed=2)
    masks = prune.magnitude_masks(model, 0.5)
    rewound = prune.rewind(copy.deepcopy(model), init.state_dict(), masks)
    name = next(iter(masks))
    w = rewound.get_submodule(name).weight
    assert torch.equal(w, init.get_submodule(name).weight * masks[name])
    assert torch.equal(rewound.classifier.weight, model.classifier.weight)  # head kept
    fresh = prune.random_reinit(copy.deepcopy(model), masks, seed=0)
    fw = fresh.get_submodule(name).weight
    assert torch.equal(fw != 0, masks[name]) and not torch.allclose(fw, model.get_submodule(name).weight * masks[name])
    assert 0.005 < fw[masks[name]].std().item() < 0.05  # BERT's N(0, 0.02) init
    assert torch.equal(fresh.bert.embeddings.word_embeddings.weight, model.bert.embeddings.word_embeddings.weight)
    with pytest.raises(LightKDError, match="shape"):
        prune.rewind(model, {name + ".weight": torch.zeros(2, 2)}, masks)


# ------------------------------------------------------------ sparse formats
def test_csr_linear_and_semi_structured():
    lin = nn.Linear(16, 8)
    with torch.no_grad():
        lin.weight.mul_(prune.magnitude_mask(lin.weight, 0.9))
    x = torch.randn(2, 5, 16)
    assert torch.allclose(prune.CSRLinear(lin)(x), lin(x), atol=1e-5)
    mask = prune.semi_structured_mask(torch.randn(8, 16))
    assert mask.float().mean() == 0.5
    assert (mask.reshape(8, 4, 4).sum(-1) == 2).all()
    with pytest.raises(LightKDError, match="groups of 4"):
        prune.semi_structured_mask(torch.randn(8, 6))


# ------------------------------------------------------------ heads
def test_head_gates_one_is_identity_zero_matches_head_mask():
    model = tiny_bert(heads=4)
    b = batch()
    inputs = {k: b[k] for k in ("input_ids", "attention_mask")}
    base = model(**inputs).logits
    with prune.head_gates(model, torch.ones(2, 4)):
        assert torch.allclose(model(**inputs).logits, base, atol=1e-6)
    gates = prune.head_mask_gates(model, {0: [1, 2], 1: [0]})
    with prune.head_gates(model, gates):
        gated = model(**inputs).logits
    removed = prune.remove_heads(copy.deepcopy(model), {0: [1, 2], 1: [0]})
    assert torch.allclose(removed(**inputs).logits, gated, atol=1e-5)
    assert removed.bert.encoder.layer[0].attention.self.query.out_features == 2 * 8


def test_head_importance_shape_and_normalisation():
    model = tiny_bert(heads=4)
    imp = prune.head_importance(model, [batch(seed=s) for s in range(2)])
    assert imp.shape == (2, 4)
    assert torch.allclose(imp.norm(dim=-1), torch.ones(2), atol=1e-4)
    raw = prune.head_importance(model, [batch(seed=s) for s in range(2)], normalize=False)
    assert torch.allclose(prune.normalize_per_layer(raw), imp)
    assert prune.head_magnitude(model).shape == (2, 4)


def test_heads_to_remove_keeps_one_per_layer_and_ranks_globally():
    imp = torch.tensor([[0.1, 0.2, 0.9], [0.05, 0.8, 0.7]])
    assert prune.heads_to_remove(imp, 1 / 3) == {0: [0], 1: [0]}
    chosen = prune.heads_to_remove(torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]]), 0.5)
    assert chosen == {0: [0, 1], 1: [0]}  # layer 0 keeps one head even though all its heads rank lowest
    assert prune.heads_to_remove(imp, 0.0) == {}
    with pytest.raises(LightKDError, match="fewer than"):
        prune.heads_to_remove(imp, 0.9)
    r = prune.random_heads(6, 12, 0.5, seed=3)
    assert sum(map(len, r.values())) == 36


def test_bad_heads():
    model = tiny_bert(heads=4)
    with pytest.raises(LightKDError, match="no attention head"):
        prune.remove_heads(model, {0: [0, 1, 2, 3]})
    prune.remove_heads(model, {0: [0, 1, 2]})
    with pytest.raises(LightKDError, match="no attention head"):
        prune.remove_heads(model, {0: [3]})  # the last one left
    with pytest.raises(LightKDError, match="layer 5"):
        prune.remove_heads(model, {5: [0]})
    with pytest.raises(LightKDError, match="do not exist"):
        prune.remove_heads(model, {1: [7]})
    fresh = tiny_bert(heads=4)
    for wrong in (torch.ones(3, 4), torch.ones(2, 4, 1), [[1.0] * 4] * 2):
        with pytest.raises(LightKDError, match="shape"):
            prune.require_importance(fresh, wrong)
        with pytest.raises(LightKDError, match="shape"):
            with prune.head_gates(fresh, wrong):
                pass
    with pytest.raises(LightKDError, match="layers, heads"):
        prune.heads_to_remove(torch.ones(8), 0.5)


# ------------------------------------------------------------ FFN and layers
def test_ffn_neurons_and_layers():
    model = tiny_bert(layers=4)
    b = batch()
    inputs = {k: b[k] for k in ("input_ids", "attention_mask")}
    small = prune.remove_ffn_neurons(copy.deepcopy(model), 0.5)
    assert small.bert.encoder.layer[0].intermediate.dense.out_features == 32
    assert small.bert.encoder.layer[0].output.dense.in_features == 32
    assert small(**inputs).logits.shape == (3, 2)
    # removing neurons whose score is zero (dead paths) changes nothing
    dead = copy.deepcopy(model)
    with torch.no_grad():
        for layer in dead.bert.encoder.layer:
            layer.output.dense.weight[:, :16] = 0
    out = dead(**inputs).logits
    assert torch.allclose(prune.remove_ffn_neurons(dead, 0.25)(**inputs).logits, out, atol=1e-5)
    with pytest.raises(LightKDError, match="one score vector per layer"):
        prune.remove_ffn_neurons(copy.deepcopy(model), 0.5, scores=[torch.ones(64)])
    with pytest.raises(LightKDError, match=r"shape \(64,\)"):
        prune.remove_ffn_neurons(copy.deepcopy(model), 0.5, scores=[torch.ones(10)] * 4)

    assert prune.layers_to_drop(6, "top", 2) == [4, 5]
    assert prune.layers_to_drop(6, "bottom", 2) == [0, 1]
    assert prune.layers_to_drop(6, "alternate", 3) == [0, 2, 4]
    dropped = prune.drop_layers(copy.deepcopy(model), [1, 3])
    assert len(dropped.bert.encoder.layer) == 2 and dropped.config.num_hidden_layers == 2
    assert dropped(**inputs).logits.shape == (3, 2)
    for bad in ([0, 1, 2, 3], [7], [1, 1, 2, 3]):
        with pytest.raises(LightKDError, match="keeping at least one"):
            prune.drop_layers(copy.deepcopy(model), bad)
    with pytest.raises(LightKDError, match="strategy"):
        prune.layers_to_drop(6, "middle", 2)
    with pytest.raises(LightKDError, match="alternate"):
        prune.layers_to_drop(6, "alternate", 4)


# ------------------------------------------------------------ exercise checks
def test_exercise_checks_pass_reference_and_catch_wrong(capsys):
    assert prune.check_global_magnitude_mask(prune.global_magnitude_mask_reference, trials=10, seed=1)
    per_layer = lambda ws, s: [prune.magnitude_mask(w, s) for w in ws]
    assert not prune.check_global_magnitude_mask(per_layer, trials=20, seed=1)
    assert prune.check_head_importance(prune.head_importance_reference, seed=2)
    no_abs = lambda g: prune.normalize_per_layer(g.sum(0))
    assert not prune.check_head_importance(no_abs, seed=2)

    def stub(*args):
        raise NotImplementedError
    assert not prune.check_head_importance(stub)
    assert "not implemented" in capsys.readouterr().out


def test_gradual_schedule_and_fine_tune():
    assert prune.gradual_sparsity(0, 0.8, 10) == 0.0
    assert abs(prune.gradual_sparsity(10, 0.8, 10) - 0.8) < 1e-12
    assert abs(prune.gradual_sparsity(25, 0.8, 10) - 0.8) < 1e-12
    steps = [prune.gradual_sparsity(t, 0.9, 20) for t in range(21)]
    jumps = [b - a for a, b in zip(steps, steps[1:])]
    assert all(j >= 0 for j in jumps) and jumps[0] > jumps[-1]  # fast first, slow at the end
    with pytest.raises(LightKDError, match="sparsity"):
        prune.gradual_sparsity(3, 1.0, 10)
    with pytest.raises(LightKDError, match="ramp_steps"):
        prune.gradual_sparsity(3, 0.5, 0)
    model = tiny_bert()
    info = prune.fine_tune_gradual(model, [batch(seed=s) for s in range(4)], final=0.6, steps=8, every=2, lr=1e-3)
    assert abs(prune.sparsity_of(prune.masks_from_zeros(model)) - 0.6) < 1e-3
    assert [s for _, s in info["schedule"]] == sorted(s for _, s in info["schedule"])


class _Tokenizer:
    """Just enough of a tokenizer for vocabulary_of: words are ids."""
    all_special_ids = [0, 1]

    def __call__(self, texts, add_special_tokens=True):
        return {"input_ids": [[0] + [int(w) for w in t.split()] + [1] for t in texts]}


def test_trim_vocabulary_changes_nothing_on_kept_tokens_and_reads_the_rest_as_unk(tmp_path):
    from lightkd import bench
    model = tiny_bert().eval()
    keep = prune.vocabulary_of(["5 9 12", "7 5"], _Tokenizer())
    assert keep == [0, 1, 5, 7, 9, 12]
    unk = 7
    small = prune.trim_vocabulary(model, keep, unk_id=unk).eval()
    assert small.model.bert.embeddings.word_embeddings.weight.shape[0] == len(keep)
    assert small.model.bert.embeddings.word_embeddings.padding_idx == 0  # [PAD] kept its role
    kept_ids = torch.tensor([[0, 5, 9, 12, 1], [0, 7, 5, 1, 1]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
    with torch.no_grad():
        torch.testing.assert_close(small(input_ids=kept_ids, attention_mask=mask).logits,
                                   model(input_ids=kept_ids, attention_mask=mask).logits)
        unseen = torch.tensor([[0, 5, 33, 12, 1]])  # 33 was never kept: the model reads [UNK] there
        torch.testing.assert_close(small(input_ids=unseen).logits,
                                   model(input_ids=torch.tensor([[0, 5, unk, 12, 1]])).logits)
    # the original is untouched, and the trimmed model exports as it is
    assert model.bert.embeddings.word_embeddings.weight.shape[0] == model.config.vocab_size != len(keep)
    path = bench.export_onnx(small, tmp_path / "small.onnx", {"input_ids": kept_ids, "attention_mask": mask})
    runner = bench.OnnxRunner(path)
    longer = torch.tensor([[0, 5, 9, 12, 33, 7, 1]])
    torch.testing.assert_close(runner(input_ids=longer).logits, small(input_ids=longer).logits, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("keep, unk, match", [([], 0, "keep_ids"), ([0, 10_000], 0, "keep_ids"),
                                              ([-1, 3], 3, "keep_ids"), ([0, 3], 5, "unk_id")])
def test_trim_vocabulary_bad_input(keep, unk, match):
    with pytest.raises(LightKDError, match=match):
        prune.trim_vocabulary(tiny_bert(), keep, unk_id=unk)
    with pytest.raises(LightKDError, match="BERT-family"):
        prune.trim_vocabulary(nn.Linear(2, 2), [0, 1], unk_id=0)
    with pytest.raises(LightKDError, match="texts"):
        prune.vocabulary_of([], _Tokenizer())
