"""Fast tests of lightkd.vlm on tiny random models (seconds)."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lightkd import bench, vlm
from lightkd.common import LightKDError


def tiny_bert(layers=2, seed=0):
    from transformers import BertConfig, BertModel
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=layers, num_attention_heads=4,
                        intermediate_size=32, max_position_embeddings=20, attn_implementation="eager")
    return BertModel(config, add_pooling_layer=False).eval()


def tiny_fusion(layers=2, visual_dim=6, answers=5, seed=0):
    return vlm.FusionVLM.from_bert(tiny_bert(layers, seed), visual_dim, answers).eval()


def inputs(b=3, cells=4, dim=6, length=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 50, (b, length), generator=g)
    mask = torch.ones(b, length, dtype=torch.long)
    mask[0, 3:] = 0
    return torch.randn(b, cells, dim, generator=g), ids, mask


# ------------------------------------------------------------ regions
def test_grid_boxes_and_pooling():
    boxes = vlm.grid_boxes(2)
    assert boxes.shape == (4, 6)
    assert torch.allclose(boxes[3], torch.tensor([0.5, 0.5, 1.0, 1.0, 0.5, 0.5]))
    x = torch.arange(16.0).reshape(1, 16, 1)            # a 4 x 4 grid, row by row
    pooled = vlm.pool_tokens(x, 2)
    assert pooled.flatten().tolist() == [2.5, 4.5, 10.5, 12.5]
    # the same as pooling the feature map the tokens came from
    fmap = torch.randn(2, 3, 6, 6)
    tokens = fmap.flatten(2).transpose(1, 2)
    assert torch.allclose(vlm.pool_tokens(tokens, 3), F.avg_pool2d(fmap, 2).flatten(2).transpose(1, 2))
    assert torch.equal(vlm.pool_tokens(tokens, 6), tokens)


@pytest.mark.parametrize("bad, match", [((torch.randn(1, 16, 3), 3), "divide"), ((torch.randn(1, 15, 3), 1), "square"),
                                        ((torch.randn(16, 3), 2), "tokens"), ((torch.randn(1, 16, 3), 0), "side")])
def test_pool_tokens_bad_input(bad, match):
    with pytest.raises(LightKDError, match=match):
        vlm.pool_tokens(*bad)


# ------------------------------------------------------------ the fusion model
def test_fusion_encoder_equals_transformers_bert():
    """Our layers on the same embeddings and mask give BertModel's hidden states and attentions."""
    bert = tiny_bert(3)
    model = vlm.FusionVLM.from_bert(bert, 6, 5).eval()
    visual, ids, mask = inputs()
    with torch.no_grad():
        emb = torch.cat([model.embed_visual(visual), model.embed_text(ids)], 1)
        full_mask = torch.cat([torch.ones(3, 4, dtype=torch.long), mask], 1)
        ours_h, ours_a = model.encode(emb, full_mask)
        ref = bert(inputs_embeds=emb, attention_mask=full_mask, output_hidden_states=True, output_attentions=True)
    # BertModel adds its own position and segment embeddings to inputs_embeds: compare the layers,
    # feeding BertModel's encoder our embeddings directly.
    with torch.no_grad():
        ext = bert.get_extended_attention_mask(full_mask, full_mask.shape)
        enc = bert.encoder(emb, attention_mask=ext, output_hidden_states=True, output_attentions=True)
    for mine, theirs in zip(ours_h, enc.hidden_states):
        assert torch.allclose(mine, theirs, atol=1e-5)
    for mine, theirs in zip(ours_a, enc.attentions):
        real = full_mask.bool()[:, None, None, :].expand_as(mine)
        assert torch.allclose(mine[real], theirs[real], atol=1e-5)
    assert ref.last_hidden_state.shape == ours_h[-1].shape


def test_text_embeddings_equal_bert_embeddings():
    bert = tiny_bert()
    model = vlm.FusionVLM.from_bert(bert, 6, 5).eval()
    _, ids, _ = inputs()
    with torch.no_grad():
        assert torch.allclose(model.embed_text(ids), bert.embeddings(input_ids=ids), atol=1e-6)


def test_forward_protocol_and_padding_invariance():
    model = tiny_fusion()
    visual, ids, mask = inputs()
    out = model(visual, ids, mask, output_hidden_states=True, output_attentions=True)
    assert out.logits.shape == (3, 5)
    assert len(out.hidden_states) == 3 and len(out.attentions) == 2
    assert out.attentions[0].shape == (3, 4, 4 + 5, 4 + 5)
    # extra padding does not change the answer
    ids2 = torch.cat([ids, torch.zeros(3, 2, dtype=torch.long)], 1)
    mask2 = torch.cat([mask, torch.zeros(3, 2, dtype=torch.long)], 1)
    assert torch.allclose(model(visual, ids2, mask2).logits, out.logits, atol=1e-5)


@pytest.mark.parametrize("change, match", [
    (lambda v, i, m: (v[:, :, :4], i, m), "channels"),
    (lambda v, i, m: (v[:, :3], i, m), "square"),
    (lambda v, i, m: (v[:0], i[:0], m[:0]), "empty"),
    (lambda v, i, m: (v.masked_fill(torch.rand_like(v) < 0.5, float("nan")), i, m), "NaN"),
    (lambda v, i, m: (v, torch.randint(1, 50, (3, 25)), None), "at most"),
    (lambda v, i, m: (v, i[:2], m[:2]), "input_ids"),
    (lambda v, i, m: (v[0], i, m), "visual"),
])
def test_fusion_bad_input(change, match):
    model = tiny_fusion()
    with pytest.raises(LightKDError, match=match):
        model(*change(*inputs()))


# ------------------------------------------------------------ MiniVLM
def test_minivlm_student_copies_spread_layers():
    teacher = tiny_fusion(layers=6)
    student = vlm.minivlm_student(teacher, visual_dim=7, n_layers=2)
    assert vlm.spread(6, 2) == [3, 6] and vlm.spread(6, 3) == [2, 4, 6]
    assert len(student.layers) == 2 and student.visual_dim == 7
    for mine, j in zip(student.layers, [3, 6]):
        for (n, p), (_, q) in zip(mine.named_parameters(), teacher.layers[j - 1].named_parameters()):
            assert torch.equal(p, q), n
    assert torch.equal(student.word.weight, teacher.word.weight)
    assert bench.count_params(student) < bench.count_params(teacher)
    with pytest.raises(LightKDError, match="n_student"):
        vlm.minivlm_student(teacher, 7, n_layers=7)


class Flatten(nn.Module):
    """A stand-in extractor: a 4 x 4 average-pooled picture, 3 channels per cell."""
    def forward(self, images):
        return F.adaptive_avg_pool2d(images, 4).flatten(2).transpose(1, 2)


def test_pipeline_checks_images_and_times_parts():
    pipe = vlm.VLMPipeline(Flatten(), tiny_fusion(visual_dim=3), image_size=8, grid=2)
    images = torch.rand(2, 3, 8, 8)
    _, ids, mask = inputs(b=2)
    assert pipe(images, ids, mask).logits.shape == (2, 5)
    for bad, match in ((torch.rand(2, 1, 8, 8), "3 channels"), (torch.rand(2, 3, 16, 16), "8 x 8"),
                       (torch.rand(2, 8, 8), "images must be"), (torch.rand(0, 3, 8, 8), "empty"),
                       (torch.full((2, 3, 8, 8), float("nan")), "NaN")):
        with pytest.raises(LightKDError, match=match):
            pipe(bad, ids, mask)
    times = vlm.time_breakdown({"a": pipe, "b": pipe}, images, ids, mask, rounds=2, warmup=1)
    assert set(times["b"]) == {"extractor", "transformer", "total"}
    assert times["a"]["total"].median_ms > 0


# ------------------------------------------------------------ data
class FakeTokenizer:
    def __call__(self, texts, add_special_tokens=True):
        return {"input_ids": [[101] + [len(w) for w in t.split()] + [102] for t in texts]}


def test_encode_questions_and_answers():
    enc = vlm.encode_questions(FakeTokenizer(), ["what color is it?", "is there a circle?"])
    assert enc["input_ids"].shape == (2, 6) and enc["attention_mask"].sum().item() == 12
    with pytest.raises(LightKDError, match="max_length"):
        vlm.encode_questions(FakeTokenizer(), ["a " * 30])
    for bad in ([], "one string", ["", "x"]):
        with pytest.raises(LightKDError, match="questions"):
            vlm.encode_questions(FakeTokenizer(), bad)
    assert vlm.answer_ids(("yes", "no", "red"), ["red", "yes"]).tolist() == [2, 0]
    with pytest.raises(LightKDError, match="'purple' is not in the answer vocabulary"):
        vlm.answer_ids(("yes", "no"), ["purple"])


def make_batches(n=10, cells=4, targets=None, **kw):
    g = torch.Generator().manual_seed(0)                 # the same questions and pictures on every call
    visual = torch.randn(4, cells, 6, generator=g)
    ids = torch.randint(1, 50, (n, 6), generator=g)
    mask = torch.ones(n, 6, dtype=torch.long)
    mask[::2, 4:] = 0
    return vlm.VQABatches(visual, torch.arange(n) % 4, ids, mask, torch.randint(0, 5, (n,), generator=g), targets=targets, **kw)


def test_batches_cover_every_question_once_and_trim_padding():
    b = make_batches(batch_size=3, shuffle=True, seed=1)
    assert len(b) == 4
    rows = torch.cat([x["index"] for x in b])
    assert sorted(rows.tolist()) == list(range(10))
    again = torch.cat([x["index"] for x in b])
    assert torch.equal(rows, again)                       # the same epoch gives the same order
    b.set_epoch(1)
    assert not torch.equal(rows, torch.cat([x["index"] for x in b]))
    first = next(iter(make_batches(batch_size=1)))
    assert first["input_ids"].shape == (1, 4)             # a short question is not padded to the longest
    with pytest.raises(LightKDError, match="empty"):
        vlm.VQABatches(torch.randn(1, 4, 6), torch.zeros(0, dtype=torch.long), torch.zeros(0, 3), torch.zeros(0, 3),
                       torch.zeros(0, dtype=torch.long))
    with pytest.raises(LightKDError, match="image_index"):
        vlm.VQABatches(torch.randn(1, 4, 6), torch.tensor([3]), torch.zeros(1, 3), torch.ones(1, 3),
                       torch.zeros(1, dtype=torch.long))


# ------------------------------------------------------------ DistilVLM
def test_student_positions():
    assert vlm.student_positions(16, 4, 3).tolist() == [0, 1, 2, 3, 16, 17, 18]
    assert vlm.student_positions(4, 4, 2).tolist() == [0, 1, 2, 3, 4, 5]
    with pytest.raises(LightKDError, match="more visual tokens"):
        vlm.student_positions(4, 9, 2)


def test_teacher_targets_layout_and_self_distillation_is_zero():
    teacher = tiny_fusion(layers=2)
    batches = make_batches(batch_size=4)
    targets = vlm.teacher_targets(teacher, batches, student_visual=4, layers=[1, 2])
    assert targets["hidden"].shape == (10, 3, 4 + 6, 16) and targets["attention"].shape == (10, 2, 4, 10, 10)
    # a student identical to the teacher, on the same tokens, has zero token losses
    b = make_batches(batch_size=4, targets=targets)
    batch = next(iter(b))
    out = teacher(batch["visual"], batch["input_ids"], batch["attention_mask"], output_hidden_states=True,
                  output_attentions=True)
    loss, logs = vlm.distilvlm_loss(out, batch)
    assert logs["hidden"] < 1e-5 and logs["attention"] < 1e-5 and logs["kd"] < 1e-4
    assert abs(loss.item() - logs["ce"]) < 1e-3


def test_unaligned_targets_take_the_first_teacher_tokens():
    teacher = tiny_fusion(layers=2)
    batches = make_batches(cells=16, batch_size=5)
    targets = vlm.teacher_targets(teacher, batches, student_visual=4, layers=[2])
    batch = next(iter(batches))
    out = teacher(batch["visual"], batch["input_ids"], batch["attention_mask"], output_hidden_states=True,
                  output_attentions=True)
    keep = vlm.student_positions(16, 4, batch["input_ids"].shape[1])
    assert torch.allclose(targets["hidden"][:5, 1, :len(keep)].float(), out.hidden_states[2][:, keep], atol=1e-2)
    att = targets["attention"][:5, 0].float()
    real = torch.cat([torch.ones(5, 4), batch["attention_mask"].float()], 1)
    sums = att.sum(-1)[..., :len(keep)]                    # every real row is a distribution again
    assert torch.allclose(sums[real[:, None].expand_as(sums).bool()], torch.ones(1), atol=1e-2)


def test_losses_need_targets_and_known_modes():
    model = tiny_fusion()
    batch = next(iter(make_batches(batch_size=4)))
    loss, logs = vlm.vqa_loss(model, batch, "labels")
    assert set(logs) == {"ce"} and torch.isfinite(loss)
    with pytest.raises(LightKDError, match="teacher targets"):
        vlm.vqa_loss(model, batch, "aligned")
    with pytest.raises(LightKDError, match="unknown mode"):
        vlm.arm_loss("sideways")
    assert vlm.arm_loss("aligned", kd=1.0).__name__ == "vqa_loss_aligned_kd1.0"


def test_distillation_gradients_reach_the_visual_projection():
    teacher, student = tiny_fusion(layers=2, seed=0), tiny_fusion(layers=2, seed=1)
    targets = vlm.teacher_targets(teacher, make_batches(batch_size=4), 4, [1, 2])
    batch = next(iter(make_batches(batch_size=4, targets=targets)))
    loss, _ = vlm.vqa_loss(student, batch, "aligned", kd=0.0)
    loss.backward()
    assert student.visual_proj.weight.grad.abs().sum() > 0


def test_exercise_checks_accept_the_reference_and_reject_a_wrong_answer():
    assert vlm.check_pool_tokens(vlm.pool_tokens, trials=5, seed=0)
    assert not vlm.check_pool_tokens(lambda t, s: t[:, :s * s], trials=5, seed=0)
    assert vlm.check_student_positions(vlm.student_positions, trials=5, seed=0)
    assert not vlm.check_student_positions(lambda tv, sv, l: torch.arange(sv + l), trials=5, seed=0)


def test_pyramid_extractor_joins_two_levels_of_one_pass():
    from lightkd import extractors
    torch.manual_seed(0)
    backbone = extractors.MobileNetV2().eval()
    images = torch.rand(2, 3, 64, 64)
    pyramid = vlm.PyramidExtractor(extractors.ImageExtractor(backbone, image_size=64), grid=2)
    tokens = pyramid(images)
    assert tokens.shape == (2, 4, 96 + 1280)
    middle = extractors.ImageExtractor(backbone, image_size=64, upto=extractors.STRIDE16_UPTO["mobilenet_v2"], grid=2)
    final = extractors.ImageExtractor(backbone, image_size=64, grid=2)
    assert torch.allclose(tokens[..., :96], middle(images), atol=1e-5)
    assert torch.allclose(tokens[..., 96:], final(images), atol=1e-5)
    with pytest.raises(LightKDError, match="grid 4 is finer"):
        vlm.PyramidExtractor(extractors.ImageExtractor(backbone, image_size=64), grid=4)(images)


def test_minivlm_from_pretrained_and_transfer_set_labels():
    bert = tiny_bert(6)
    student = vlm.minivlm_from_pretrained(bert, 6, 5, n_layers=2)
    ref = vlm.FusionVLM.from_bert(bert, 6, 5, layers=[2, 5])
    for (n, p), (_, q) in zip(student.layers.named_parameters(), ref.layers.named_parameters()):
        assert torch.equal(p, q), n
    logits = torch.randn(4, 5, requires_grad=True)
    labels = torch.tensor([1, vlm.UNLABELLED, 3, vlm.UNLABELLED])
    assert torch.allclose(vlm.labelled_cross_entropy(logits, labels), F.cross_entropy(logits[[0, 2]], labels[[0, 2]]))
    none = vlm.labelled_cross_entropy(logits, torch.full((4,), vlm.UNLABELLED))
    assert none.item() == 0.0
    none.backward()                                        # a batch without labels still back-propagates


# ------------------------------------------------------------ retrieval (dual encoder)
def paired_features(n=120, dim=12, seed=0):
    """Pictures and texts that describe them: texts are a fixed linear map of the pictures plus noise."""
    g = torch.Generator().manual_seed(seed)
    pictures = torch.randn(n, dim, generator=g)
    texts = pictures @ torch.randn(dim, 10, generator=g) + 0.1 * torch.randn(n, 10, generator=g)
    return pictures, texts


def test_contrastive_loss_is_clips_symmetric_cross_entropy():
    scores = torch.randn(5, 5)
    by_hand = sum(-F.log_softmax(scores, 1)[i, i] - F.log_softmax(scores, 0)[i, i] for i in range(5)) / 10
    assert torch.allclose(vlm.contrastive_loss(scores), by_hand)
    assert vlm.contrastive_loss(100 * torch.eye(4)) < 1e-6          # every pair picks its own partner


def test_similarity_kd_is_zero_against_itself_and_checks_shapes():
    s = torch.randn(6, 6)
    assert vlm.similarity_kd_loss(s, s, 2.0).abs() < 1e-6
    assert vlm.similarity_kd_loss(s, s.flip(0), 2.0) > 0
    with pytest.raises(LightKDError, match="one shape"):
        vlm.similarity_kd_loss(s, s[:5, :5])


def test_train_dual_learns_pairs_it_never_saw_and_distils():
    pictures, texts = paired_features(240)
    model = vlm.train_dual(pictures[:200], texts[:200], steps=150, batch_size=64, lr=3e-3, dim=16)
    ranks = vlm.retrieval_ranks(model, pictures[200:], texts[200:])
    assert vlm.recall_at(ranks, 1).mean() > 0.8                     # held-out pairs: 40 candidates, chance 1/40
    student = vlm.train_dual(pictures[:200, :6], texts[:200], steps=20, batch_size=64, dim=16,
                             teacher=(model, pictures[:200], texts[:200]), kd=1.0)
    assert isinstance(student, vlm.DualEncoder) and not student.training
    again = vlm.train_dual(pictures[:200], texts[:200], steps=150, batch_size=64, lr=3e-3, dim=16)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_retrieval_ranks_agree_with_sorting_the_scores():
    pictures, texts = paired_features(30)
    model = vlm.DualEncoder(12, 10, 8).eval()
    ranks = vlm.retrieval_ranks(model, pictures, texts)
    with torch.no_grad():
        order = model.scores(pictures, texts).argsort(1, descending=True)
    assert torch.equal(ranks, (order == torch.arange(30)[:, None]).float().argmax(1))
    assert torch.equal(vlm.recall_at(ranks, 30), torch.ones(30))


@pytest.mark.parametrize("call, match", [
    (lambda p, t: vlm.train_dual(p[:10], t[:9]), "one row per pair"),
    (lambda p, t: vlm.train_dual(p[:0], t[:0]), "non-empty"),
    (lambda p, t: vlm.train_dual(p, t, batch_size=1), "batch_size"),
    (lambda p, t: vlm.train_dual(p, t, kd=0.5), "needs a teacher"),
    (lambda p, t: vlm.train_dual(p, t, kd=1.5, teacher=(None, p, t)), "kd must be"),
    (lambda p, t: vlm.train_dual(p * float("nan"), t), "NaN"),
    (lambda p, t: vlm.retrieval_ranks(vlm.DualEncoder(12, 10), p[:5], t[:4]), "one picture per text"),
    (lambda p, t: vlm.recall_at(torch.zeros(3), 0), "k must be"),
    (lambda p, t: vlm.DualEncoder(0, 10), "image_dim"),
])
def test_retrieval_bad_input(call, match):
    pictures, texts = paired_features(20)
    with pytest.raises(LightKDError, match=match):
        call(pictures, texts)


def test_text_features_mean_pool_the_chosen_layer_and_cache(tmp_cache):
    bert = tiny_bert(3)

    def tokenizer(texts, padding=True, return_tensors="pt"):      # one word piece per word, ids 1..49
        ids = [[1 + sum(map(ord, w)) % 49 for w in t.split()] for t in texts]
        width = max(map(len, ids))
        return {"input_ids": torch.tensor([i + [0] * (width - len(i)) for i in ids]),
                "attention_mask": torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i in ids])}

    texts = ["grinning face", "cat with wry smile", "flag"]
    got = vlm.text_features(bert, tokenizer, texts, 2, data=None)
    enc = tokenizer(texts)
    with torch.no_grad():
        hidden = bert(**enc, output_hidden_states=True).hidden_states[2]
    for i, n in enumerate(enc["attention_mask"].sum(1).tolist()):
        assert torch.allclose(got[i], hidden[i, :n].mean(0), atol=1e-6)     # padding left out of the mean
    cached = vlm.text_features(bert, tokenizer, texts, 2, data="three-names")
    assert torch.allclose(cached, got) and torch.allclose(vlm.text_features(bert, tokenizer, texts, 2,
                                                                            data="three-names"), got)
    with pytest.raises(LightKDError, match="layers must be"):
        vlm.text_features(bert, tokenizer, texts, 4, data=None)
    with pytest.raises(LightKDError, match="non-empty"):
        vlm.text_features(bert, tokenizer, [], 1, data=None)
