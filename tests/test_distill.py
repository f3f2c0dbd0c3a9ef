"""Unit tests for lightkd.distill, on tiny random BERTs (fast, offline)."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lightkd import distill as D
from lightkd import train
from lightkd.blocks import student_from_teacher
from lightkd.common import LightKDError


from conftest import make_tiny_batch as tiny_batch, make_tiny_bert as tiny_bert  # noqa: E402


# ----------------------------------------------------------- logit losses
@pytest.mark.parametrize("T", [1.0, 2.0, 7.5])
def test_soft_target_loss_equals_torch_kl_div(T):
    s, t = torch.randn(5, 4), torch.randn(5, 4)
    ref = F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1), reduction="batchmean") * T * T
    assert torch.allclose(D.soft_target_loss(s, t, T), ref, atol=1e-6)
    assert D.soft_target_loss(t, t, T).abs() < 1e-6


def test_soft_target_gradient_is_T_times_prob_difference():
    # d/ds [T^2 KL] = T (p_s - p_t) / B: the T^2 factor undoes the 1/T^2 shrinkage of the raw gradient
    T, s, t = 4.0, torch.randn(6, 3, requires_grad=True), torch.randn(6, 3)
    D.soft_target_loss(s, t, T).backward()
    expected = T * (F.softmax(s.detach() / T, -1) - F.softmax(t / T, -1)) / 6
    assert torch.allclose(s.grad, expected, atol=1e-6)


def test_kd_loss_mixes_soft_and_hard():
    s, t, y = torch.randn(8, 3), torch.randn(8, 3), torch.randint(0, 3, (8,))
    assert torch.allclose(D.kd_loss(s, t, y, T=3, alpha=1.0), D.soft_target_loss(s, t, 3))
    assert torch.allclose(D.kd_loss(s, t, y, T=3, alpha=0.0), F.cross_entropy(s, y))
    mix = 0.3 * D.soft_target_loss(s, t, 2) + 0.7 * F.cross_entropy(s, y)
    assert torch.allclose(D.kd_loss(s, t, y, T=2, alpha=0.3), mix)


def test_soft_cross_entropy_is_tinybert_mean():
    s, t = torch.randn(4, 5), torch.randn(4, 5)
    ref = (-F.softmax(t, -1) * F.log_softmax(s, -1)).sum(-1).mean() / 5
    assert torch.allclose(D.soft_cross_entropy(s, t), ref, atol=1e-6)


@pytest.mark.parametrize("T", [0, -1, float("nan"), float("inf"), "2", None, True])
def test_bad_temperature(T):
    s = torch.randn(2, 2)
    with pytest.raises(LightKDError, match="temperature"):
        D.soft_target_loss(s, s, T)
    with pytest.raises(LightKDError, match="temperature"):
        D.kd_loss(s, s, torch.tensor([0, 1]), T=T)


@pytest.mark.parametrize("alpha", [-0.1, 1.01, 2, float("nan"), None])
def test_bad_alpha(alpha):
    s = torch.randn(2, 2)
    with pytest.raises(LightKDError, match="alpha"):
        D.kd_loss(s, s, torch.tensor([0, 1]), T=2.0, alpha=alpha)
    with pytest.raises(LightKDError, match="alpha"):
        D.kd_matches(alpha)


def test_logits_with_different_label_counts():
    with pytest.raises(LightKDError, match="num_labels"):
        D.soft_target_loss(torch.randn(2, 3), torch.randn(2, 2), 1.0)


# --------------------------------------------------------- feature losses
def test_feature_losses_and_masks():
    a = torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    b = a.clone()
    b[0, 3:] = 100.0  # garbage at padded positions must not count
    assert D.mse_loss(a, b, mask) == 0
    assert D.cosine_loss(a, b, mask).abs() < 1e-6
    assert D.mse_loss(a, b) > 0
    c = torch.randn(2, 5, 8)
    assert torch.allclose(D.mse_loss(a, c), F.mse_loss(a, c))
    cos = 1 - F.cosine_similarity(a, c, dim=-1)
    assert torch.allclose(D.cosine_loss(a, c, mask), cos[mask.bool()].mean(), atol=1e-6)
    with pytest.raises(LightKDError, match="projection"):
        D.mse_loss(a, torch.randn(2, 5, 9))


def test_attention_kl_loss():
    t = torch.softmax(torch.randn(2, 3, 4, 4), -1)
    s = torch.softmax(torch.randn(2, 3, 4, 4), -1)
    assert D.attention_kl_loss(t, t).abs() < 1e-5
    ref = (t * (t.log() - s.log())).sum(-1).mean()
    assert torch.allclose(D.attention_kl_loss(s, t), ref, atol=1e-5)


# -------------------------------------------------------- feature capture
def test_capture_hidden_attention_and_scores():
    model, batch = tiny_bert(), tiny_batch()
    f = D.capture(model, batch, [("hidden", 0), ("hidden", -1), ("attention", 1), ("attention_scores", 1),
                                 ("embeddings", None)])
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True,
                output_attentions=True)
    assert torch.equal(f[("hidden", 4)], out.hidden_states[4])  # -1 normalised to the last index
    assert torch.equal(f[("embeddings", None)], out.hidden_states[0])
    assert torch.equal(f[("logits", None)], out.logits)
    # the probabilities are the softmax of the hooked scores with padded keys masked out
    scores = f[("attention_scores", 1)]
    assert (scores[0, :, :, -3:] == 0).all()  # TinyBERT zeroes masked scores
    probs = torch.softmax(scores.masked_fill(batch["attention_mask"][:, None, None, :] == 0, -1e9), -1)
    assert torch.allclose(probs, f[("attention", 1)], atol=1e-6)
    assert not any(m._forward_hooks for m in model.modules())  # hooks removed


def test_capture_by_module_path_equals_hidden_states():
    model, batch = tiny_bert(), tiny_batch()
    f = D.capture(model, batch, [("hidden", "bert.encoder.layer.2"), ("hidden", 3)])
    assert torch.allclose(f[("hidden", "bert.encoder.layer.2")], f[("hidden", 3)])


def test_capture_attention_from_sdpa_model():
    model, batch = tiny_bert(attn="sdpa"), tiny_batch()
    f = D.capture(model, batch, [("attention", 0)])
    assert f[("attention", 0)].shape == (3, 4, 7, 7)


def test_bad_layers_and_paths():
    model, batch = tiny_bert(layers=4), tiny_batch()
    with pytest.raises(LightKDError, match="4 layers"):
        D.capture(model, batch, [("hidden", 5)])
    with pytest.raises(LightKDError, match="4 layers"):
        D.capture(model, batch, [("attention", 4)])
    with pytest.raises(LightKDError, match="no module"):
        D.capture(model, batch, [("hidden", "bert.encoder.layer.9")])
    with pytest.raises(LightKDError, match="unknown feature"):
        D.Match(0, 0, "keys")
    with pytest.raises(LightKDError, match="unknown loss"):
        D.Match(0, 0, "hidden", "l7")
    with pytest.raises(LightKDError, match="weight"):
        D.Match(0, 0, "hidden", "mse", weight=-1)


# ------------------------------------------------------- DistillationLoss
def test_distillation_loss_matches_formula_and_bad_inputs():
    teacher, student, batch = tiny_bert(4, seed=0), tiny_bert(2, seed=1), tiny_batch()
    matches, hard = D.kd_matches(alpha=0.4, cosine_weight=2.0)
    loss_fn = D.DistillationLoss(teacher, student, matches, temperature=3.0, hard_weight=hard)
    loss, logs = loss_fn(student, batch)
    with torch.no_grad():
        t = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
    s = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
    expected = (D.kd_loss(s.logits, t.logits, batch["labels"], T=3.0, alpha=0.4)
                + 2.0 * D.cosine_loss(s.hidden_states[-1], t.hidden_states[-1], batch["attention_mask"]))
    assert torch.allclose(loss, expected, atol=1e-5)
    assert set(logs) == {"ce", "kl:logits", "cosine:hidden[-1->-1]", "loss"}

    with pytest.raises(LightKDError, match="student has 2 layers"):
        D.DistillationLoss(teacher, student, [D.Match(4, 3, "hidden")])
    with pytest.raises(LightKDError, match="teacher has 4 layers"):
        D.DistillationLoss(teacher, student, [D.Match(6, 1, "attention")])
    with pytest.raises(LightKDError, match="vocabulary"):
        D.DistillationLoss(teacher, tiny_bert(2, vocab=120), matches)
    with pytest.raises(LightKDError, match="number of labels"):
        D.DistillationLoss(teacher, tiny_bert(2, labels=3), matches)
    with pytest.raises(LightKDError, match="temperature"):
        D.DistillationLoss(teacher, student, matches, temperature=0)
    with pytest.raises(LightKDError, match="nothing to learn"):
        D.DistillationLoss(teacher, student, [])


def test_projection_and_attention_matches():
    teacher, student = tiny_bert(4, hidden=32), tiny_bert(2, hidden=16, heads=4, seed=1)
    w_h = nn.Linear(16, 32)  # one shared projection, as TinyBERT's W_h
    matches = ([D.Match(2 * m, m, "hidden", "mse", projection=w_h) for m in range(3)]
               + [D.Match(2 * m + 1, m, "attention_scores", "mse") for m in range(2)]
               + [D.Match(None, None, "logits", "soft_ce")])
    loss_fn = D.DistillationLoss(teacher, student, matches)
    assert sum(p.numel() for p in loss_fn.parameters()) == 16 * 32 + 32  # shared once
    loss, logs = loss_fn(student, tiny_batch())
    loss.backward()
    assert w_h.weight.grad is not None and len(logs) == 7
    lin = D.DistillationLoss(teacher, student, [D.Match(-1, -1, "hidden", "mse", projection="linear")])
    assert isinstance(lin.projections[0], nn.Linear) and lin.projections[0].in_features == 16


def test_teacher_cache_equals_live_teacher():
    teacher, batch = tiny_bert(4), tiny_batch(b=5)
    student = student_from_teacher(teacher, [0, 3]).eval()
    batches = [{k: v[:2] for k, v in batch.items()}, {k: v[2:] for k, v in batch.items()}]
    # the cache trims each sentence to its length and pads it back: results must not change
    feats = [("hidden", -1), ("attention", 3)]
    cache = D.TeacherCache(teacher, batches, feats)
    assert len(cache) == 5
    matches = [D.Match(None, None, "logits", "kl"), D.Match(-1, -1, "hidden", "cosine"),
               D.Match(3, 1, "attention", "mse")]
    live = D.DistillationLoss(teacher, student, matches, temperature=2.0, hard_weight=0.5)
    cached = D.DistillationLoss(cache, student, matches, temperature=2.0, hard_weight=0.5)
    for b in batches:
        assert torch.allclose(live(student, b)[0], cached(student, b)[0], atol=1e-5)
    with pytest.raises(LightKDError, match="cache lacks"):
        D.DistillationLoss(cache, student, [D.Match(2, 1, "hidden")])
    with pytest.raises(LightKDError, match="4 layers"):
        D.DistillationLoss(cache, student, [D.Match(9, 1, "hidden")])


def test_plugs_into_train_fit():
    teacher = tiny_bert(4)
    student = student_from_teacher(teacher, [0, 2])
    batches = [tiny_batch(seed=i) for i in range(3)]
    for i, b in enumerate(batches):
        b["index"] = torch.arange(3 * i, 3 * i + 3)
    matches, hard = D.kd_matches(0.5, cosine_weight=1.0)
    loss_fn = D.DistillationLoss(D.TeacherCache(teacher, batches, [("hidden", -1)]), student, matches,
                                 temperature=2.0, hard_weight=hard)
    result = train.fit(student, batches, epochs=2, lr=1e-3, loss=loss_fn, bf16=False, progress=False)
    assert result.steps == 6 and "kl:logits" in result.history[-1]


# ------------------------------------------------------ plain torch models
class TinyViT(nn.Module):
    """A plain torch model (no config, no output_hidden_states): matched by module path."""

    def __init__(self, depth=4, dim=8, classes=3):
        super().__init__()
        self.embed = nn.Linear(1, dim)  # one pixel per token: enough to exercise the plumbing
        self.blocks = nn.ModuleList([nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU())
                                     for _ in range(depth)])
        self.head = nn.Linear(dim, classes)

    def forward(self, pixel_values):
        x = self.embed(pixel_values.flatten(2).transpose(1, 2))
        for block in self.blocks:
            x = x + block(x)
        return self.head(x.mean(1))


def test_plain_torch_model_by_module_path():
    torch.manual_seed(0)
    teacher = TinyViT()
    student = student_from_teacher(teacher, [1, 3])
    assert len(student.blocks) == 2
    batch = {"pixel_values": torch.randn(5, 1, 2, 2 * 3), "labels": torch.randint(0, 3, (5,))}
    loss_fn = D.DistillationLoss(teacher, student, [D.Match(None, None, "logits", "kl"),
                                                    D.Match("blocks.3", "blocks.1", "hidden", "mse")],
                                 temperature=1.0, hard_weight=0.5)
    loss, logs = loss_fn(student, batch)
    assert math.isfinite(loss.item()) and "mse:hidden[blocks.3->blocks.1]" in logs
    with pytest.raises(LightKDError, match="hidden_states"):
        D.capture(student, batch, [("hidden", 1)])


# ------------------------------------------------------------ exercises
def test_exercise_checks():
    assert D.check_kd_loss(D.kd_loss, trials=10, seed=0, )
    no_t2 = lambda s, t, y, T, a: a * D.soft_target_loss(s, t, T) / T / T + (1 - a) * F.cross_entropy(s, y)
    assert not D.check_kd_loss(no_t2, trials=20, seed=0, )


def test_mlm_logits_use_masked_tokens_only():
    # DistilBERT's MLM-level distillation: KL and CE only where labels != -100
    from transformers import BertConfig, BertForMaskedLM
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32, attn_implementation="eager")
    torch.manual_seed(0)
    teacher = BertForMaskedLM(config).eval()
    student = student_from_teacher(teacher, [1]).eval()
    batch = tiny_batch(vocab=50)
    labels = torch.full_like(batch["input_ids"], -100)
    labels[:, 1] = batch["input_ids"][:, 1]
    batch["labels"] = labels
    matches, hard = D.distilbert_matches()
    loss_fn = D.DistillationLoss(teacher, student, matches, temperature=D.DISTILBERT["temperature"],
                                 hard_weight=hard)
    loss, logs = loss_fn(student, batch)
    s = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 1]
    with torch.no_grad():
        t = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 1]
    assert math.isclose(logs["kl:logits"], D.soft_target_loss(s, t, 2.0).item(), rel_tol=1e-5)
    assert math.isclose(logs["ce"], F.cross_entropy(s, labels[:, 1]).item(), rel_tol=1e-5)


def test_stored_teacher_cache_is_computed_once_and_reads_back_the_same(tmp_cache, tiny_bert, monkeypatch):
    from conftest import make_tiny_batch
    teacher = tiny_bert(layers=2)
    first, second = make_tiny_batch(seed=1), make_tiny_batch(seed=2)
    second["index"] = second["index"] + 3
    batches = [first, second]
    feats = [("hidden", -1), ("attention", 0)]
    live = D.TeacherCache(teacher, batches, feats, dtype=torch.bfloat16)
    stored = D.TeacherCache.stored(teacher, batches, feats, dtype=torch.bfloat16)
    calls = []
    with monkeypatch.context() as patch:
        patch.setattr(D.TeacherCache, "__init__", lambda *a, **k: calls.append(1))
        again = D.TeacherCache.stored(teacher, batches, feats, dtype=torch.bfloat16)  # from disk: no teacher run
    assert not calls and len(again) == len(live) == 6
    for batch in batches:
        want = live.lookup(batch, live.keys)
        for cache in (stored, again):
            got = cache.lookup(batch, cache.keys)
            assert set(got) == set(want)
            for key in want:
                torch.testing.assert_close(got[key], want[key], atol=0, rtol=0)
    assert again.resolve("hidden", -1) == live.resolve("hidden", -1)
    other = [make_tiny_batch(seed=3)]  # other sentences: their own entry, not the first one's outputs
    assert len(D.TeacherCache.stored(teacher, other, feats, dtype=torch.bfloat16)) == 3
    assert len(list((tmp_cache / "models").glob("teacher-outputs-*[!k]"))) == 2
