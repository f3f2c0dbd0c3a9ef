"""Unit tests for lightkd.vit: patches, the ViT, DeiT's losses, TinyViT's store."""
import importlib

import pytest
import torch
import torch.nn.functional as F

from lightkd import LightKDError, data, train, vit
from lightkd.common import SourceMissing
from lightkd.data import ImageSplit


def tiny_config(**kw):
    return vit.ViTConfig(**{"dim": 16, "depth": 2, "heads": 2, **kw})


# ------------------------------------------------------------------ patches
def test_patchify_matches_conv_patch_embedding():
    torch.manual_seed(0)
    images = torch.randn(3, 2, 12, 12)
    conv = torch.nn.Conv2d(2, 5, kernel_size=4, stride=4)
    linear = torch.nn.Linear(2 * 16, 5)
    linear.weight.data = conv.weight.data.reshape(5, -1)
    linear.bias.data = conv.bias.data
    expected = conv(images).flatten(2).transpose(1, 2)  # B, N, D in reading order
    assert torch.allclose(linear(vit.patchify(images, 4)), expected, atol=1e-5)


def test_patchify_roundtrip_and_order():
    images = torch.arange(2 * 1 * 4 * 4, dtype=torch.float).reshape(2, 1, 4, 4)
    patches = vit.patchify(images, 2)
    assert patches.shape == (2, 4, 4)
    assert patches[0, 1].tolist() == [2, 3, 6, 7]  # second patch: top right
    assert torch.equal(vit.unpatchify(patches, 2, channels=1), images)


@pytest.mark.parametrize("size,patch", [(28, 5), (28, 3), (10, 4)])
def test_patch_size_must_divide_image(size, patch):
    with pytest.raises(LightKDError, match="does not divide"):
        vit.patchify(torch.zeros(1, 1, size, size), patch)
    with pytest.raises(LightKDError, match="does not divide"):
        vit.ViTConfig(image_size=size, patch_size=patch)


@pytest.mark.parametrize("bad", [0, -7, 2.5])
def test_patch_size_must_be_positive_integer(bad):
    with pytest.raises(LightKDError, match="patch_size"):
        vit.require_patch_size(28, bad)


def test_config_rejects_bad_shapes():
    with pytest.raises(LightKDError, match="divisible"):
        vit.ViTConfig(dim=30, heads=4)
    with pytest.raises(LightKDError, match="depth"):
        vit.ViTConfig(depth=0)


# -------------------------------------------------------------------- model
def test_vit_shapes_and_heads():
    torch.manual_seed(0)
    model = vit.VisionTransformer(tiny_config(distillation_token=True)).eval()
    out = model(pixel_values=torch.rand(3, 1, 28, 28), output_attentions=True)
    assert out.cls_logits.shape == out.dist_logits.shape == (3, 10)
    assert torch.allclose(out.logits, (out.cls_logits + out.dist_logits) / 2)
    assert len(out.attentions) == 2 and out.attentions[0].shape == (3, 2, 18, 18)
    assert torch.allclose(out.attentions[0].sum(-1), torch.ones(3, 2, 18), atol=1e-5)
    with pytest.raises(LightKDError, match="pixel_values must be images"):
        model(pixel_values=torch.rand(3, 1, 32, 32))


def test_fused_and_explicit_attention_agree():
    torch.manual_seed(0)
    model = vit.VisionTransformer(tiny_config()).eval()
    x = torch.rand(2, 1, 28, 28)
    assert torch.allclose(model(pixel_values=x).logits, model(pixel_values=x, output_attentions=True).logits, atol=1e-5)
    full_mask = torch.ones(2, 16)
    assert torch.allclose(model(pixel_values=x).logits, model(pixel_values=x, key_mask=full_mask).logits, atol=1e-4)


def test_key_mask_hides_dropped_tokens():
    torch.manual_seed(0)
    scores = torch.randn(2, 3, 5, 5)
    mask = torch.tensor([[1, 1, 0, 1, 0], [1, 0, 1, 1, 1]], dtype=torch.float)
    attn = vit.masked_softmax(scores, mask)
    for b in range(2):
        keep = mask[b].bool()
        ref = scores[b][:, keep][:, :, keep].softmax(-1)  # kept queries over kept keys only
        assert torch.allclose(attn[b][:, keep][:, :, keep], ref, atol=1e-4)
        assert attn[b][:, keep][:, :, ~keep].max() < 1e-5   # nobody attends to a dropped token
        for i in (~keep).nonzero().flatten():  # a dropped token sees the kept ones and itself
            allowed = keep.clone()
            allowed[i] = True
            assert torch.allclose(attn[b, :, i][:, allowed], scores[b, :, i][:, allowed].softmax(-1), atol=1e-4)
    soft = torch.full((2, 5), 0.5, requires_grad=True)      # soft masks carry gradients (DynamicViT)
    vit.masked_softmax(scores, soft)[..., 0].sum().backward()
    assert soft.grad is not None and soft.grad.abs().sum() > 0
    with pytest.raises(LightKDError, match="key_mask"):
        vit.masked_softmax(scores, torch.ones(2, 4))


def test_masked_patches_do_not_change_class_token():
    torch.manual_seed(0)
    model = vit.VisionTransformer(tiny_config()).eval()
    x = torch.rand(1, 1, 28, 28)
    mask = torch.ones(1, 16)
    mask[0, 5:] = 0
    y = x.clone()
    y[..., 14:, :] = torch.rand(1, 1, 14, 28)  # changes only patches 8..15, all masked
    a = model(pixel_values=x, key_mask=mask).cls_logits
    b = model(pixel_values=y, key_mask=mask).cls_logits
    assert torch.allclose(a, b, atol=1e-4)


def test_shared_weights_are_one_set():
    shared = vit.VisionTransformer(tiny_config(depth=4, share_weights=True))
    plain = vit.VisionTransformer(tiny_config(depth=4))
    assert shared.blocks[3].attn.qkv.weight is shared.blocks[0].attn.qkv.weight
    assert shared.blocks[3].norm1.weight is not shared.blocks[0].norm1.weight  # norms per layer, as MiniViT
    per_block = sum(p.numel() for n, p in plain.blocks[0].named_parameters() if "norm" not in n)
    assert sum(p.numel() for p in plain.parameters()) - sum(p.numel() for p in shared.parameters()) == 3 * per_block
    state = {k: v.clone() for k, v in shared.state_dict().items()}
    again = vit.VisionTransformer(tiny_config(depth=4, share_weights=True))
    again.load_state_dict(state)
    assert again.blocks[2].mlp.fc1.weight is again.blocks[0].mlp.fc1.weight


def test_attention_rollout_is_a_distribution_over_patches():
    torch.manual_seed(0)
    model = vit.VisionTransformer(tiny_config()).eval()
    out = model(pixel_values=torch.rand(2, 1, 28, 28), output_attentions=True)
    roll = vit.attention_rollout(out.attentions)
    assert roll.shape == (2, 16) and (roll >= 0).all() and (roll.sum(-1) <= 1 + 1e-5).all()
    with pytest.raises(LightKDError, match="output_attentions"):
        vit.attention_rollout(model(pixel_values=torch.rand(1, 1, 28, 28)).attentions)


def test_models_train_through_lightkd_fit():
    torch.manual_seed(0)
    labels = torch.randint(0, 4, (128,))                     # the class is the image's brightness level
    images = labels[:, None, None, None] / 4 + 0.1 * torch.rand(128, 1, 28, 28)
    split = ImageSplit(images, labels)
    for model in (vit.VisionTransformer(tiny_config()), vit.SmallCNN(width=4, hidden=8)):
        batches = vit.AugmentedBatches(split, batch_size=32, seed=0, flip=False)
        train.fit(model, batches, None, epochs=10, lr=3e-3, bf16=False, progress=False)
        # chance is 0.25: both must learn the rule
        assert train.evaluate(model, data.image_batches(split, batch_size=32), bf16=False)["accuracy"] > 0.75


# ------------------------------------------------------------- augmentation
def test_augmentation_is_a_function_of_seed_epoch_sample():
    p1, p2 = vit.augmentation_params(50, 3, seed=7, max_shift=2), vit.augmentation_params(50, 3, seed=7, max_shift=2)
    assert all(torch.equal(p1[k], p2[k]) for k in p1)
    assert not torch.equal(p1["flip"], vit.augmentation_params(50, 4, seed=7, max_shift=2)["flip"])
    img = torch.zeros(1, 1, 5, 5)
    img[0, 0, 1, 1] = 1
    out = vit.augment(img, torch.tensor([1]), torch.tensor([2]), torch.tensor([False]))
    assert out[0, 0, 2, 3] == 1 and out.sum() == 1
    flipped = vit.augment(img, torch.tensor([0]), torch.tensor([0]), torch.tensor([True]))
    assert torch.equal(flipped, img.flip(-1))


def test_batches_carry_the_teacher_outputs_of_their_own_view():
    torch.manual_seed(0)
    split = ImageSplit(torch.rand(40, 1, 28, 28), torch.randint(0, 10, (40,)))
    teacher = vit.SmallCNN(width=4, hidden=8).eval()
    dense = vit.teacher_logits_for_views(teacher, split, epochs=2, seed=3, batch_size=16)
    store = vit.TeacherLogitStore.from_logits(dense, k=3)
    batches = vit.AugmentedBatches(split, batch_size=16, seed=3, order_seed=9, teacher_logits=dense, store=store)
    for epoch in range(2):
        for batch in batches:
            with torch.no_grad():
                online = teacher(pixel_values=batch["pixel_values"]).logits
            assert torch.allclose(batch["teacher_logits"], online, atol=1e-5)
            assert torch.equal(batch["teacher_indices"][:, 0].long(), online.argmax(-1))
    with pytest.raises(LightKDError, match="epochs"):
        next(iter(batches))
    with pytest.raises(LightKDError, match="must match"):
        vit.AugmentedBatches(split, seed=4, store=store)


# ------------------------------------------------------------ DeiT's losses
def test_soft_distillation_loss_is_kl_times_tau_squared():
    torch.manual_seed(0)
    s, t = torch.randn(8, 10), torch.randn(8, 10)
    for tau in (1.0, 2.0, 4.0):
        p = F.softmax(t / tau, -1)
        kl = (p * (p.log() - F.log_softmax(s / tau, -1))).sum(-1).mean()
        assert torch.allclose(vit.soft_distillation_loss(s, t, tau), kl * tau ** 2, atol=1e-5)
        assert torch.allclose(vit.soft_distillation_loss(s, t, tau, reduction="numel"), kl * tau ** 2 / 10, atol=1e-6)
    assert vit.soft_distillation_loss(t, t, 2.0).abs() < 1e-6
    with pytest.raises(LightKDError, match="differ"):
        vit.soft_distillation_loss(s, t[:, :5])


def test_hard_distillation_loss_is_ce_on_teacher_argmax():
    torch.manual_seed(0)
    s, t = torch.randn(8, 10), torch.randn(8, 10)
    assert torch.allclose(vit.hard_distillation_loss(s, t), F.cross_entropy(s, t.argmax(-1)))


def test_deit_loss_mixes_with_alpha():
    torch.manual_seed(0)
    cls, dist, t = torch.randn(6, 10), torch.randn(6, 10), torch.randn(6, 10)
    y = torch.randint(0, 10, (6,))
    ce = F.cross_entropy(cls, y)
    for kind, distill in (("soft", vit.soft_distillation_loss(dist, t, 2.0)), ("hard", vit.hard_distillation_loss(dist, t))):
        loss, logs = vit.deit_loss(cls, y, dist, t, kind=kind, alpha=0.3, tau=2.0)
        assert torch.allclose(loss, 0.7 * ce + 0.3 * distill, atol=1e-6)
    assert torch.allclose(vit.deit_loss(cls, y, kind="none")[0], ce)
    assert torch.allclose(vit.deit_loss(cls, y, dist, t, kind="hard", alpha=0.0)[0], ce)


def test_stored_probs_give_the_same_loss_as_dense_teacher_when_k_is_all():
    torch.manual_seed(0)
    cls, dist, t = torch.randn(6, 10), torch.randn(6, 10), torch.randn(6, 10) * 3
    y = torch.randint(0, 10, (6,))
    values, indices = vit.topk_probs(t, 10)
    probs = vit.sparse_soft_labels(values, indices, 10)
    for kind in ("soft", "hard"):
        dense = vit.deit_loss(cls, y, dist, t, kind=kind)[0]
        stored = vit.deit_loss(cls, y, dist, kind=kind, teacher_probs=probs)[0]
        assert torch.allclose(dense, stored, atol=2e-3)
    with pytest.raises(LightKDError, match="tau=1"):
        vit.deit_loss(cls, y, dist, kind="soft", tau=2.0, teacher_probs=probs)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, "half", None])
def test_alpha_outside_unit_interval_is_rejected(alpha):
    z = torch.zeros(2, 10)
    with pytest.raises(LightKDError, match="alpha"):
        vit.deit_loss(z, torch.zeros(2, dtype=torch.long), z, z, alpha=alpha)
    with pytest.raises(LightKDError, match="alpha"):
        vit.deit_loss_fn(kind="hard", alpha=alpha)


def test_bad_tau_and_kind_are_rejected():
    z = torch.zeros(2, 10)
    with pytest.raises(LightKDError, match="tau"):
        vit.soft_distillation_loss(z, z, tau=0)
    with pytest.raises(LightKDError, match="kind"):
        vit.deit_loss(z, torch.zeros(2, dtype=torch.long), z, z, kind="medium")
    loss = vit.deit_loss_fn(teacher=None, kind="hard")
    model = vit.VisionTransformer(tiny_config(distillation_token=True))
    with pytest.raises(LightKDError, match="needs a teacher"):
        loss(model, {"pixel_values": torch.rand(2, 1, 28, 28), "labels": torch.zeros(2, dtype=torch.long)})


def test_agrees_with_lightkd_distill_when_present():
    try:
        distill = importlib.import_module("lightkd.distill")
    except ImportError:
        pytest.skip("lightkd.distill is not written yet")
    if not hasattr(distill, "soft_target_loss"):
        pytest.skip("lightkd.distill has no soft_target_loss")
    torch.manual_seed(0)
    s, t = torch.randn(8, 10), torch.randn(8, 10)
    for tau in (1.0, 2.0, 4.0):
        assert torch.allclose(distill.soft_target_loss(s, t, tau), vit.soft_distillation_loss(s, t, tau), atol=1e-5)


# --------------------------------------------------------------- TinyViT
def test_topk_and_sparse_soft_labels():
    torch.manual_seed(0)
    logits = torch.randn(5, 10) * 3
    values, indices = vit.topk_probs(logits, 3)
    assert values.dtype == torch.float16 and indices.dtype == torch.int16
    labels = vit.sparse_soft_labels(values, indices, 10)
    assert torch.allclose(labels.sum(-1), torch.ones(5), atol=1e-3)
    p = logits.softmax(-1)
    top = p.topk(3).indices
    assert torch.allclose(labels.gather(-1, top), p.gather(-1, top), atol=1e-3)
    rest = (1 - p.topk(3).values.sum(-1)) / 7
    others = torch.ones(5, 10, dtype=torch.bool).scatter(-1, top, False)
    assert torch.allclose(labels[others].reshape(5, 7), rest[:, None].expand(5, 7), atol=1e-3)


@pytest.mark.parametrize("k", [0, -1, 11, 2.0, True])
def test_k_out_of_range_is_rejected(k):
    with pytest.raises(LightKDError, match="k "):
        vit.topk_probs(torch.randn(2, 10), k)


def test_store_bytes_and_errors():
    torch.manual_seed(0)
    split = ImageSplit(torch.rand(20, 1, 28, 28), torch.randint(0, 10, (20,)))
    teacher = vit.SmallCNN(width=4, hidden=8)
    store = vit.TeacherLogitStore.build(teacher, split, epochs=2, k=2, seed=0)
    assert store.nbytes() == 2 * 20 * 2 * (2 + 2)
    assert store.dense_nbytes() == 2 * 20 * 10 * 2
    assert store.teacher_forward_passes == 40
    with pytest.raises(LightKDError, match="k "):
        vit.TeacherLogitStore.build(teacher, split, epochs=1, k=11, seed=0)
    with pytest.raises(LightKDError, match="epochs"):
        vit.TeacherLogitStore.build(teacher, split, epochs=0, k=2, seed=0)


# --------------------------------------------------------------- data, exercises
def test_missing_image_data_set_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("LIGHTKD_FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(SourceMissing, match="dataset-fashion-mnist"):
        data.load_images("fashion_mnist")
    with pytest.raises(LightKDError, match="unknown image data set"):
        data.load_images("imagenet")


def test_check_functions_accept_the_reference_and_reject_a_wrong_answer(capsys):
    assert vit.check_patchify(vit.patchify, trials=5, seed=0)
    assert vit.check_hard_distillation_loss(vit.hard_distillation_loss, trials=5, seed=0)
    assert vit.check_sparse_soft_labels(vit.sparse_soft_labels, trials=5, seed=0)
    wrong_patchify = lambda x, p: x.unfold(2, p, p).unfold(3, p, p).reshape(x.shape[0], -1, x.shape[1] * p * p)
    assert not vit.check_patchify(wrong_patchify, trials=20, seed=0)
    assert not vit.check_hard_distillation_loss(lambda s, t: F.cross_entropy(t, s.argmax(-1)), trials=5, seed=0)

    def stub(*args):
        raise NotImplementedError
    assert not vit.check_patchify(stub, trials=2, seed=0)
    assert "not implemented" in capsys.readouterr().out


@pytest.mark.parametrize("distillation_token", [False, True])
def test_equals_transformers_vit_and_deit(distillation_token):
    torch.manual_seed(0)
    model = vit.VisionTransformer(tiny_config(distillation_token=distillation_token)).eval()
    for p in model.parameters():  # make every weight matter (fresh LayerNorms are 1 and 0)
        p.data += 0.1 * torch.randn_like(p)
    hf = vit.to_transformers(model)
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        ours = model(pixel_values=x).logits
        theirs = hf(pixel_values=(x - model.config.pixel_mean) / model.config.pixel_std).logits
    assert torch.allclose(ours, theirs, atol=1e-4)


def test_soft_cross_entropy_is_ce_with_soft_targets():
    torch.manual_seed(0)
    s, p = torch.randn(4, 10), torch.randn(4, 10).softmax(-1)
    assert torch.allclose(vit.target_cross_entropy(s, p), F.cross_entropy(s, p), atol=1e-6)
