"""Unit tests for lightkd.sparsify: DynamicViT, EViT, ToMe, text token pruning."""
import math

import pytest
import torch
import torch.nn.functional as F

from lightkd import LightKDError, bench, sparsify, train
from lightkd.models import Block, ViTConfig, VisionTransformer


def backbone(**kw):
    torch.manual_seed(0)
    cfg = ViTConfig(**{"image_size": 16, "patch_size": 2, "dim": 32, "depth": 4, "heads": 4, **kw})
    return VisionTransformer(cfg).eval()


def images(n=3, size=16):
    torch.manual_seed(1)
    return torch.rand(n, 1, size, size)


# ------------------------------------------------------------- schedules
def test_keep_schedule_and_locations():
    assert sparsify.keep_schedule(0.7) == pytest.approx([0.7, 0.49, 0.343])
    assert sparsify.prune_locations(12) == [3, 6, 9]
    assert sparsify.prune_locations(4) == [1, 2, 3]
    assert sparsify.dynamicvit_tokens(196, 12, 0.7) == [197] * 3 + [138] * 3 + [97] * 3 + [68] * 3


@pytest.mark.parametrize("rho", [0, -0.2, 1.5, float("nan"), "0.7", True])
def test_rho_outside_unit_interval(rho):
    with pytest.raises(LightKDError, match="rho"):
        sparsify.keep_schedule(rho)
    with pytest.raises(LightKDError):
        sparsify.DynamicViT(backbone(), rho=rho)


def test_keep_schedule_longer_than_depth():
    with pytest.raises(LightKDError, match="too long"):
        sparsify.DynamicViT(backbone(depth=3), keep_ratios=[0.9, 0.8, 0.7])
    with pytest.raises(LightKDError, match="too long"):
        sparsify.prune_locations(2, 2)
    with pytest.raises(LightKDError, match="longer"):
        sparsify.PrunedBert(_tiny_bert(), keep=[0.9] * 3)


def test_r_larger_than_half_the_tokens():
    bb = backbone()  # 64 patches + class token: at most 32 merges per layer
    sparsify.ToMe(bb, r=32)
    with pytest.raises(LightKDError, match="larger than half the tokens"):
        sparsify.ToMe(bb, r=33)
    with pytest.raises(LightKDError, match="r "):
        sparsify.ToMe(bb, r=-1)


def test_patch_size_must_divide_the_image():
    with pytest.raises(LightKDError, match="does not divide"):
        backbone(patch_size=3)


def test_bad_backbone_and_keep_rate():
    with pytest.raises(LightKDError, match="VisionTransformer"):
        sparsify.EViT(torch.nn.Linear(2, 2))
    with pytest.raises(LightKDError, match="keep_rate"):
        sparsify.EViT(backbone(), keep_rate=0)


# ------------------------------------------------------------------ cost
def test_block_flops_match_the_flop_counter():
    from torch.utils.flop_counter import FlopCounterMode
    torch.manual_seed(0)
    block = Block(48, 4, mlp_ratio=2.0).eval()
    for n in (5, 17, 50):
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            block(torch.randn(1, n, 48), return_attention=True)
        assert counter.get_total_flops() == sparsify.block_flops(n, 48, 96)


def test_dynamicvit_flops_are_predicted():
    bb = backbone()
    c = bb.config
    model = sparsify.DynamicViT(bb, rho=0.7).eval()
    x = images(1)
    blocks = sparsify.blocks_flops(sparsify.dynamicvit_tokens(c.num_patches, c.depth, 0.7), c.dim, 2 * c.dim)
    outside = 2 * c.num_patches * (c.patch_size ** 2) * c.dim + 2 * c.dim * c.num_classes
    d = c.dim
    tokens_seen = [c.num_patches] + [sparsify.kept_count(c.num_patches, r) for r in model.keep_ratios[:-1]]
    predictors = sum(2 * n * (d * d + d * d // 2 + d // 2 * d // 4 + d // 4 * 2) for n in tokens_seen)
    assert bench.flops(model, {"pixel_values": x}) == blocks + outside + predictors
    full = bench.flops(bb, {"pixel_values": x})
    assert full == sparsify.blocks_flops([c.num_patches + 1] * c.depth, d, 2 * d) + outside


# ------------------------------------------------------------ DynamicViT
def test_gumbel_softmax_hard_is_one_hot_with_soft_gradient():
    torch.manual_seed(0)
    logits = torch.randn(4, 7, 2, requires_grad=True)
    noise = -torch.log(-torch.log(torch.rand(4, 7, 2)))
    y = sparsify.gumbel_softmax_hard(logits, noise, tau=0.5)
    assert torch.equal(y.detach(), F.one_hot(((logits + noise) / 0.5).argmax(-1), 2).float())
    w = torch.randn(4, 7, 2)
    (y * w).sum().backward()
    g_hard = logits.grad.clone()
    logits.grad = None
    (((logits + noise) / 0.5).softmax(-1) * w).sum().backward()
    assert torch.allclose(g_hard, logits.grad, atol=1e-6)


def test_rho_one_equals_the_backbone_exactly():
    bb = backbone()
    model = sparsify.DynamicViT(bb, rho=1.0).eval()
    x = images()
    with torch.no_grad():
        assert torch.equal(model(pixel_values=x).logits, bb(pixel_values=x).logits)


@pytest.mark.parametrize("sharpen", [1.0, 6.0])
def test_masking_in_training_equals_dropping_tokens(sharpen):
    bb = backbone()
    with torch.no_grad():  # sharp attention (as after training): a dropped key may score highest
        for block in bb.blocks:
            block.attn.qkv.weight.mul_(sharpen)
    model = sparsify.DynamicViT(bb, rho=0.6).eval()
    x = images(4)
    n = bb.config.num_patches
    with torch.no_grad():
        pruned = model(pixel_values=x)
        masks = []
        for kept in pruned.kept:
            m = torch.zeros(len(x), n)
            masks.append(m.scatter(1, kept, 1.0))
        masked = model.forward_masked(x, lambda stage, logp, decision: masks[stage])
    assert [int(m[0].sum()) for m in masks] == [sparsify.kept_count(n, r) for r in model.keep_ratios]
    assert torch.allclose(masked.logits, pruned.logits, atol=1e-4)
    # zeroing the dropped tokens instead would change the answer
    zeroed = masks[-1]
    assert not torch.allclose(bb(pixel_values=x, key_mask=torch.zeros_like(zeroed)).logits, pruned.logits, atol=1e-3)


def test_training_mode_samples_masks_and_loss_backpropagates():
    bb = backbone()
    teacher = backbone()
    model = sparsify.DynamicViT(bb, rho=0.7).train()
    loss_fn = sparsify.dynamicvit_loss(teacher, model.keep_ratios)
    batch = {"pixel_values": images(8), "labels": torch.randint(0, 10, (8,))}
    loss, logs = loss_fn(model, batch)
    loss.backward()
    assert all(p.grad is not None for p in model.predictors.parameters())
    assert set(logs) == {"ce", "ratio", "kl", "token", "kept"}
    out = model(pixel_values=batch["pixel_values"])
    assert len(out.decisions) == 3 and all(set(d.unique().tolist()) <= {0.0, 1.0} for d in out.decisions)
    # decisions are nested: a token dropped once stays dropped
    assert ((out.decisions[1] <= out.decisions[0]) & (out.decisions[2] <= out.decisions[1])).all()


def test_dynamicvit_trains_through_fit():
    bb = backbone()
    model = sparsify.DynamicViT(bb, rho=0.7)
    loss_fn = sparsify.dynamicvit_loss(backbone(), model.keep_ratios)
    batches = [{"pixel_values": images(8), "labels": torch.randint(0, 10, (8,)), "index": torch.arange(8)}]
    train.fit(model, batches, epochs=2, lr=1e-3, loss=loss_fn, bf16=False, progress=False)
    assert model(pixel_values=images(2)).logits.shape == (2, 10)


# ------------------------------------------------------------ EViT / ToMe
def test_evit_and_tome_without_sparsity_equal_the_backbone():
    bb = backbone()
    x = images()
    with torch.no_grad():
        ref = bb(pixel_values=x).logits
        assert torch.allclose(sparsify.EViT(bb, keep_rate=1.0)(pixel_values=x).logits, ref, atol=1e-5)
        assert torch.allclose(sparsify.ToMe(bb, r=0)(pixel_values=x).logits, ref, atol=1e-5)


def test_evit_keeps_the_most_attended_and_fuses_the_rest():
    bb = backbone()
    out = sparsify.EViT(bb, keep_rate=0.5)(pixel_values=images(2))
    n = [k.shape[1] for k in out.kept]
    assert n == [32 + 1, math.ceil(0.5 * 33) + 1, math.ceil(0.5 * 17) + 1]  # kept + one fused token
    assert (out.kept[0][:, -1] == -1).all()
    unfused = sparsify.EViT(bb, keep_rate=0.5, fuse=False)(pixel_values=images(2))
    assert [k.shape[1] for k in unfused.kept] == [32, 16, 8]


def test_bipartite_matching_against_brute_force():
    torch.manual_seed(0)
    metric = torch.randn(1, 11, 6)
    src, dst, unmerged = sparsify.bipartite_matching(metric, 3)
    a, b = metric[0, ::2], metric[0, 1::2]
    sim = F.cosine_similarity(a[:, None], b[None], dim=-1)
    best, arg = sim.max(1)
    top = best.argsort(descending=True)[:3]
    assert torch.equal(src[0], top) and torch.equal(dst[0], arg[top])
    assert sorted(unmerged[0].tolist() + src[0].tolist()) == list(range(6))
    assert sparsify.check_bipartite_matching(sparsify.matching_pairs, trials=5, seed=0)


def test_merge_tokens_is_a_size_weighted_mean():
    torch.manual_seed(0)
    x, size = torch.randn(2, 9, 4), torch.randint(1, 4, (2, 9, 1)).float()
    src, dst, unmerged = sparsify.bipartite_matching(x, 3)
    merged, msize = sparsify.merge_tokens(x, size, src, dst, unmerged)
    assert merged.shape == (2, 6, 4) and torch.allclose(msize.sum(1), size.sum(1))
    assert torch.allclose((merged * msize).sum(1), (x * size).sum(1), atol=1e-5)


def test_tome_reduces_tokens_and_tracks_sources():
    bb = backbone()
    out = sparsify.ToMe(bb, r=8, track=True)(pixel_values=images(2))
    assert [s.shape[1] for s in out.kept] == [56, 48, 40, 32]
    assert sparsify.tome_tokens(65, 4, 8) == [65, 57, 49, 41]
    assert all(torch.allclose(s.sum((1, 2)), torch.tensor(64.0)) for s in out.kept)  # every patch somewhere


# ------------------------------------------------------------------ text
def _tiny_bert():
    from transformers import BertConfig, BertForSequenceClassification
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, num_labels=2)
    return BertForSequenceClassification(cfg).eval()


def test_pruned_bert_equals_bert_and_padding_does_not_matter():
    bert = _tiny_bert()
    torch.manual_seed(0)
    ids = torch.randint(5, 100, (3, 12))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    with torch.no_grad():
        ref = bert(input_ids=ids, attention_mask=mask).logits
        assert torch.allclose(sparsify.PrunedBert(bert)(input_ids=ids, attention_mask=mask).logits, ref, atol=1e-5)
        pruned = sparsify.PrunedBert(bert, keep=[0.6, 0.3])
        batch = pruned(input_ids=ids, attention_mask=mask)
        assert batch.kept[-1].shape[1] == math.ceil(12 * 0.3)
        for i in range(3):  # one sentence at a time, no padding: the same logits
            n = int(mask[i].sum())
            alone = pruned(input_ids=ids[i:i + 1, :n], attention_mask=mask[i:i + 1, :n]).logits
            assert torch.allclose(alone, batch.logits[i:i + 1], atol=1e-5)


# ------------------------------------------------------------- exercises
def test_exercise_checks_pass_the_reference_and_fail_wrong_answers():
    assert sparsify.check_gumbel_softmax_hard(sparsify.gumbel_softmax_hard, trials=5, seed=0)
    soft_only = lambda logits, noise, tau: ((logits + noise) / tau).softmax(-1)
    assert not sparsify.check_gumbel_softmax_hard(soft_only, trials=5, seed=0, verbose=False) \
        if "verbose" in sparsify.check_gumbel_softmax_hard.__code__.co_varnames else \
        not sparsify.check_gumbel_softmax_hard(soft_only, trials=5, seed=0)
    hard_no_grad = lambda logits, noise, tau: F.one_hot(((logits + noise) / tau).argmax(-1), logits.shape[-1]).float()
    assert not sparsify.check_gumbel_softmax_hard(hard_no_grad, trials=5, seed=0)
    assert sparsify.check_blocks_flops(sparsify.blocks_flops, trials=5, seed=0)
    linear_only = lambda tokens, d, h: sum(2 * n * d * (4 * d + 2 * h) for n in tokens)
    assert not sparsify.check_blocks_flops(linear_only, trials=5, seed=0)
    first_r = lambda metric, r: (torch.arange(0, 2 * r, 2), torch.arange(1, 2 * r + 1, 2))
    assert not sparsify.check_bipartite_matching(first_r, trials=10, seed=0)
