"""Unit tests for lightkd.mobilebert, on tiny shapes (fast, offline)."""
import pytest
import torch
import torch.nn.functional as F

from lightkd import distill, train
from lightkd import mobilebert as mb
from lightkd.common import LightKDError


def tiny_config(**kw):
    spec = dict(vocab_size=100, num_labels=2, num_hidden_layers=3, hidden_size=32, intra_size=8,
                num_attention_heads=4, intermediate_size=16, num_ffn=3, embedding_size=8,
                max_position_embeddings=64)
    spec.update(kw)
    return mb.Config(**spec)


def tiny_teacher(layers=3, hidden=32, heads=4, seed=0):
    from transformers import BertConfig, BertForSequenceClassification
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=100, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=2 * hidden, max_position_embeddings=64, num_labels=2,
                        attn_implementation="eager")
    return BertForSequenceClassification(config).eval()


def tiny_batch(b=3, n=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 100, (b, n), generator=g)
    mask = torch.ones(b, n, dtype=torch.long)
    mask[0, n - 3:] = 0
    ids[0, n - 3:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.randint(0, 2, (b,), generator=g),
            "index": torch.arange(b)}


def hf_config(norm="no_norm", act="relu", **kw):
    from transformers import MobileBertConfig
    spec = dict(vocab_size=100, hidden_size=32, intra_bottleneck_size=8, num_attention_heads=4,
                intermediate_size=16, embedding_size=8, num_hidden_layers=2, normalization_type=norm,
                hidden_act=act, layer_norm_eps=1e-5, max_position_embeddings=64)
    spec.update(kw)
    return MobileBertConfig(**spec)


# --------------------------------------------------------------- architecture
@pytest.mark.parametrize("norm,act,ffns", [("no_norm", "relu", 4), ("layer_norm", "gelu", 2), ("no_norm", "gelu", 1)])
def test_block_equals_transformers_layer(norm, act, ffns):
    from transformers.models.mobilebert.modeling_mobilebert import MobileBertLayer
    hf = hf_config(norm, act, num_feedforward_networks=ffns)
    torch.manual_seed(0)
    theirs = MobileBertLayer(hf).eval()
    for p in theirs.parameters():  # random, not the identity-like init, so every weight matters
        torch.nn.init.normal_(p, std=0.3)
    ours = mb.load_transformers_layer(mb.MobileBertBlock(mb.Config.from_transformers(hf)), theirs).eval()
    x = torch.randn(2, 7, 32)
    mask = torch.zeros(2, 1, 1, 7)
    mask[0, ..., 5:] = torch.finfo(torch.float32).min
    with torch.no_grad():
        ref = theirs(x, mask, None, output_attentions=True)
        out, probs = ours(x, mask)
    assert torch.allclose(out, ref[0], atol=1e-5)
    assert torch.allclose(probs, ref[1], atol=1e-6)


def test_embeddings_equal_transformers_and_conv():
    from transformers.models.mobilebert.modeling_mobilebert import MobileBertEmbeddings
    hf = hf_config()
    torch.manual_seed(1)
    theirs = MobileBertEmbeddings(hf).eval()
    for p in theirs.parameters():
        torch.nn.init.normal_(p, std=0.3)
    ours = mb.load_transformers_embeddings(mb.TrigramEmbedding(mb.Config.from_transformers(hf)), theirs).eval()
    ids = torch.randint(0, 100, (2, 9))
    with torch.no_grad():
        assert torch.allclose(ours(ids), theirs(ids), atol=1e-5)
        conv = ours.as_conv1d()
        e = ours.word(ids)
        assert torch.allclose(conv(e.transpose(1, 2)).transpose(1, 2), ours.project(ours.trigrams(e)), atol=1e-5)


def test_model_speaks_the_transformers_protocol():
    model = mb.MobileBert(tiny_config()).eval()
    batch = tiny_batch()
    feats = distill.capture(model, batch, [("hidden", 0), ("hidden", -1), ("attention", 1)])
    assert feats[("hidden", 0)].shape == (3, 7, 32)
    assert feats[("attention", 1)].shape == (3, 4, 7, 7)
    assert torch.allclose(feats[("attention", 1)].sum(-1), torch.ones(3, 4, 7))
    assert feats[("logits", None)].shape == (3, 2)
    # padding does not change the real tokens' result
    short = {k: v[:1, :4] for k, v in batch.items() if k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        a = model(**short).last_hidden_state
        b = model(batch["input_ids"][:1], batch["attention_mask"][:1]).last_hidden_state[:, :4]
    assert torch.allclose(a, b, atol=1e-5)


def test_block_params_formula_matches_module():
    for kw in (dict(), dict(num_ffn=1, intermediate_size=40), dict(key_query_shared_bottleneck=False)):
        cfg = tiny_config(**kw)
        block = mb.MobileBertBlock(cfg)
        n = sum(p.numel() for p in block.parameters())
        assert n == mb.block_params(cfg.hidden_size, cfg.intra_size, cfg.intermediate_size, cfg.num_ffn,
                                    cfg.key_query_shared_bottleneck)
    teacher = tiny_teacher()
    layer = teacher.bert.encoder.layer[0]
    assert sum(p.numel() for p in layer.parameters()) == mb.bert_block_params(32, 64)


def test_paper_mobilebert_size_and_ratio():
    cfg = mb.Config()
    model = mb.MobileBert(cfg)
    total = sum(p.numel() for p in model.parameters())
    assert 24e6 < total < 26e6  # 25.3M in the paper (with its MLM head's dense)
    assert 0.4 <= mb.mha_ffn_ratio(512, 128, 512, 4) <= 0.6


def test_student_config_follows_teacher():
    cfg = mb.student_config(tiny_teacher().config)
    assert (cfg.hidden_size, cfg.intra_size, cfg.num_attention_heads, cfg.num_hidden_layers) == (32, 8, 4, 3)


# ------------------------------------------------------------------ bad input
def test_intra_width_must_divide_into_heads():
    with pytest.raises(LightKDError, match="does not divide into 4 heads"):
        tiny_config(intra_size=10)


@pytest.mark.parametrize("field,value,match", [("normalization", "batch_norm", "normalization"),
                                               ("activation", "swish", "activation"),
                                               ("hidden_size", 0, "positive")])
def test_unknown_norm_or_activation(field, value, match):
    with pytest.raises(LightKDError, match=match):
        tiny_config(**{field: value})
    with pytest.raises(LightKDError, match="normalization"):
        mb.make_norm("rms", 4)
    with pytest.raises(LightKDError, match="activation"):
        mb.make_activation("tanh")


def test_feature_map_needs_teacher_width():
    teacher = tiny_teacher(hidden=32)
    student = mb.MobileBert(tiny_config(hidden_size=24))
    with pytest.raises(LightKDError, match="inter-block width"):
        mb.transfer_matches(teacher, student)
    # without feature-map transfer the widths may differ
    only_attention = mb.transfer_matches(teacher, student, weights=mb.TransferWeights(feature_map=0))
    assert {m.feature for m in only_attention} == {"attention"}


def test_depth_and_heads_must_fit():
    with pytest.raises(LightKDError, match="layers"):
        mb.transfer_matches(tiny_teacher(layers=4), mb.MobileBert(tiny_config()))
    with pytest.raises(LightKDError, match="heads"):
        mb.transfer_matches(tiny_teacher(heads=4), mb.MobileBert(tiny_config(num_attention_heads=8)))


@pytest.mark.parametrize("per_layer", [0, -1, 1.5, True])
def test_progressive_needs_steps_per_layer(per_layer):
    with pytest.raises(LightKDError, match="at least one step per layer"):
        mb.progressive_factors(0, per_layer)


def test_progressive_budget_too_small():
    teacher, student = tiny_teacher(), mb.MobileBert(tiny_config())
    batches = [tiny_batch()]
    with pytest.raises(LightKDError, match="at least one step per layer"):
        mb.layerwise_transfer(student, teacher, batches, "progressive", steps=2)
    with pytest.raises(LightKDError, match="strategy"):
        mb.layerwise_transfer(student, teacher, batches, "sideways", steps=6)


# ----------------------------------------------------------------- transfer
def test_feature_map_loss_ignores_offset_and_scale():
    t = torch.randn(2, 5, 16)
    s = 3.0 * t + 2.0
    assert mb.feature_map_loss(s, t) < 1e-8
    assert mb.feature_map_loss(torch.randn(2, 5, 16), t) > 0.5
    assert mb.mean_gap_loss(s, t) > 0 and mb.variance_gap_loss(s, t) > 0
    assert mb.mean_gap_loss(t, t) == 0 and mb.variance_gap_loss(t, t) == 0
    ref = F.mse_loss(F.layer_norm(s[:1, :3], (16,)), F.layer_norm(torch.zeros(1, 3, 16) + t[:1, :3], (16,)))
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]])
    assert torch.allclose(mb.feature_map_loss(s, t, mask), ref, atol=1e-6)


def test_group_heads_is_sound():
    a = torch.randn(2, 12, 5, 5).softmax(-1)
    assert torch.equal(mb.group_heads(a, 12), a)
    g = mb.group_heads(a, 4)
    assert g.shape == (2, 4, 5, 5)
    assert torch.allclose(g.sum(-1), torch.ones(2, 4, 5))
    assert torch.allclose(g[:, 1], a[:, 3:6].mean(1))
    assert mb.grouped_attention_kl(g, a) < 1e-6          # a student equal to the grouped teacher: no loss
    assert mb.grouped_attention_kl(a[:, :4], a) > 0
    with pytest.raises(LightKDError, match="grouped"):
        mb.group_heads(a, 5)


def test_transfer_matches_layout():
    teacher, student = tiny_teacher(), mb.MobileBert(tiny_config())
    matches = mb.transfer_matches(teacher, student, weights=mb.TransferWeights(mean=5000, variance=5))
    fm = [m for m in matches if m.loss is mb.feature_map_loss]
    assert [(m.teacher, m.student) for m in fm] == [(1, 1), (2, 2), (3, 3)]  # embeddings skipped
    assert all(abs(m.weight - 100 / 3) < 1e-9 for m in fm)
    att = [m for m in matches if m.feature == "attention"]
    assert [(m.teacher, m.student, m.loss) for m in att] == [(0, 0, "attention_kl"), (1, 1, "attention_kl"),
                                                             (2, 2, "attention_kl")]
    assert len(mb.transfer_matches(teacher, student, layer=2)) == 2
    loss = distill.DistillationLoss(teacher, student, matches)
    value, logs = loss(student, tiny_batch())
    assert torch.isfinite(value) and "feature_map:hidden[3->3]" in logs


def test_grouped_heads_used_when_teacher_has_more():
    teacher = tiny_teacher(heads=8)
    student = mb.MobileBert(tiny_config(num_attention_heads=4))
    matches = mb.transfer_matches(teacher, student)
    assert {m.loss for m in matches if m.feature == "attention"} == {mb.grouped_attention_kl}
    value, _ = distill.DistillationLoss(teacher, student, matches)(student, tiny_batch())
    assert torch.isfinite(value)


def test_init_from_teacher_copies_what_fits():
    teacher, student = tiny_teacher(), mb.MobileBert(tiny_config())
    done = mb.init_from_teacher(student, teacher)
    assert "classifier" in done and "pooler" in done and "position embeddings" in done
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)
    # the PCA'd table + middle-slot projection reproduce the teacher's table up to the dropped directions
    table = teacher.bert.embeddings.word_embeddings.weight
    back = student.embeddings.project(student.embeddings.trigrams(student.embeddings.word.weight[None]))[0]
    _, s, _ = torch.linalg.svd(table, full_matrices=False)
    kept = (table - back).norm() ** 2 / table.norm() ** 2
    assert torch.allclose(kept, (s[8:] ** 2).sum() / (s ** 2).sum(), atol=1e-3)


def test_progressive_schedule_and_training():
    f = mb.progressive_factors(1, 5)
    assert [f(s) for s in (0, 4, 5, 9, 10, 30)] == [0.0, 0.0, 3.0, 3.0, 0.3, 0.3]
    teacher, student = tiny_teacher(), mb.MobileBert(tiny_config())
    mb.init_from_teacher(student, teacher)
    top = student.encoder.layer[2].query.weight.clone()
    batches = [tiny_batch(seed=s) for s in range(2)]
    # stop inside phase 1: the top block (phase 2) has not moved yet, block 0 has
    b0 = student.encoder.layer[0].query.weight.clone()
    result = mb.layerwise_transfer(student, teacher, batches, "progressive", steps=6, lr=1e-2, progress=False)
    assert result.steps == 6
    assert not torch.equal(student.encoder.layer[0].query.weight, b0)
    assert not torch.equal(student.encoder.layer[2].query.weight, top)
    head = student.classifier.weight.clone()
    assert torch.equal(head, teacher.classifier.weight)  # the copied classifier waits (lr 0)


@pytest.mark.parametrize("strategy", ["joint", "auxiliary"])
def test_joint_and_auxiliary_reduce_the_transfer_loss(strategy):
    teacher, student = tiny_teacher(), mb.MobileBert(tiny_config())
    batches = [tiny_batch(seed=s) for s in range(2)]
    result = mb.layerwise_transfer(student, teacher, batches, strategy, steps=30, lr=3e-3, progress=False)
    first, last = result.history[0], result.history[-1]
    assert last["loss"] < first["loss"]
    assert ("ce" in last) == (strategy == "auxiliary")


def test_task_distill_with_teacher_cache():
    teacher, student = tiny_teacher(), mb.MobileBert(tiny_config())
    batches = [tiny_batch(seed=s) for s in range(2)]
    for k, b in enumerate(batches):
        b["index"] = torch.arange(3) + 3 * k
    cache = distill.TeacherCache(teacher, batches, [("hidden", l) for l in range(1, 4)] +
                                 [("attention", l) for l in range(3)])
    mb.layerwise_transfer(student, cache, batches, "joint", steps=2, progress=False)
    result = mb.task_distill(student, cache, batches, batches, steps=4, lr=1e-3, progress=False)
    assert result.steps == 4 and result.best_dev_accuracy is not None


# ---------------------------------------------------------------- exercises
def test_exercise_checks_accept_reference_and_reject_wrong():
    assert mb.check_nonorm(mb.nonorm_reference)
    assert not mb.check_nonorm(lambda x, w, b: F.layer_norm(x, x.shape[-1:], w, b))
    assert mb.check_bottleneck_shapes(mb.bottleneck_shapes_reference)
    wrong = lambda b, n, H, h, heads, i: ((b, n, h), (b, heads, n, H // heads), (b, n, i), (b, n, H))
    assert not mb.check_bottleneck_shapes(wrong)
