"""Tests for lightkd.share: ALBERT's parameter arithmetic and sharing, MiniViT."""
import pytest
import torch

from lightkd import bench, share
from lightkd.common import LightKDError
from lightkd.models import ViTConfig, VisionTransformer

TINY = dict(vocab_size=97, embedding_size=8, hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
            intermediate_size=24, max_position_embeddings=32, type_vocab_size=2, num_labels=0)


def tiny_bert(layers=4, seed=0):
    from transformers import BertConfig, BertForSequenceClassification
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=101, hidden_size=16, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=24, max_position_embeddings=32, num_labels=2,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForSequenceClassification(config).eval()


def ids(batch=2, n=7, vocab=97, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, vocab, (batch, n), generator=g)
    mask = torch.ones_like(x)
    mask[0, -2:] = 0
    return x, mask


# ------------------------------------------------------------- arithmetic
@pytest.mark.parametrize("mode", share.SHARING_MODES)
@pytest.mark.parametrize("groups", [1, 2, 4])
@pytest.mark.parametrize("E", [8, 16])
def test_parameter_count_equals_the_built_model(mode, groups, E):
    config = share.SharedConfig(**{**TINY, "embedding_size": E, "sharing": mode, "num_groups": groups})
    model = share.SharedEncoder(config)
    assert bench.count_params(model) == share.parameter_count(config)["total"]


def test_parameter_count_with_a_classifier_and_without_projection():
    config = share.SharedConfig(**{**TINY, "embedding_size": 16, "num_labels": 3, "project_when_equal": False})
    assert isinstance(share.SharedEncoder(config).projection, torch.nn.Identity)
    assert bench.count_params(share.SharedEncoder(config)) == share.parameter_count(config)["total"]


def test_albert_table_reproduces_the_paper_within_two_percent():
    table = share.albert_table()
    for key, (value, rounding) in share.ALBERT_PAPER_PARAMS.items():
        assert share.matches_paper(table[key], value, rounding), (key, table[key], value)
        assert abs(table[key] - value) <= max(0.02 * value, rounding / 2)
    assert table[128, "all"] == 11_683_584  # ALBERT-base as released: 11.7M


def test_tied_indices():
    assert share.tied_indices("all", 6, 2) == ([0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 1])
    assert share.tied_indices("attention", 4, 1) == ([0, 0, 0, 0], [0, 1, 2, 3])
    assert share.tied_indices("ffn", 4, 2) == ([0, 1, 2, 3], [0, 0, 1, 1])
    assert share.tied_indices("none", 3, 1) == ([0, 1, 2], [0, 1, 2])


# ---------------------------------------------------- equals transformers' ALBERT
@pytest.mark.parametrize("groups", [1, 2])
def test_shared_encoder_equals_albert_model(groups):
    from transformers import AlbertModel
    config = share.SharedConfig(**{**TINY, "num_groups": groups})
    torch.manual_seed(0)
    albert = AlbertModel(share.albert_config(config)).eval()
    ours = share.from_albert(albert)
    x, mask = ids()
    with torch.no_grad():
        theirs = albert(input_ids=x, attention_mask=mask, output_hidden_states=True)
        mine = ours(input_ids=x, attention_mask=mask, output_hidden_states=True)
    assert torch.allclose(mine.last_hidden_state, theirs.last_hidden_state, atol=1e-5)
    assert torch.allclose(mine.logits, theirs.pooler_output, atol=1e-5)
    for a, b in zip(mine.hidden_states, theirs.hidden_states):
        assert torch.allclose(a, b, atol=1e-5)
    assert bench.count_params(ours) == bench.count_params(albert)


def test_albert_config_refuses_modes_albert_lacks():
    with pytest.raises(LightKDError, match="shares all"):
        share.albert_config(share.SharedConfig(**{**TINY, "sharing": "ffn"}))


# ----------------------------------------------------------- unique params
def test_count_params_counts_tied_tensors_once():
    layer = torch.nn.Linear(4, 4)
    tied = torch.nn.ModuleList([layer, layer, layer])
    assert bench.count_params(tied) == 20
    teacher = tiny_bert()
    student = share.shared_student(teacher, "all")
    per_layer = sum(p.numel() for p in teacher.bert.encoder.layer[0].parameters())
    assert share.encoder_params(teacher) == 4 * per_layer
    assert share.encoder_params(student) == per_layer
    assert bench.count_params(teacher) - bench.count_params(student) == 3 * per_layer


# ----------------------------------------------------------------- students
def test_shared_student_ties_what_the_mode_says():
    teacher = tiny_bert()
    layers = lambda m: m.bert.encoder.layer
    s = share.shared_student(teacher, "attention", groups=2)
    L = layers(s)
    assert L[0].attention is L[1].attention and L[2].attention is L[3].attention
    assert L[1].attention is not L[2].attention and L[0].intermediate is not L[1].intermediate
    s = share.shared_student(teacher, "ffn")
    L = layers(s)
    assert all(l.output is L[0].output and l.intermediate is L[0].intermediate for l in L)
    assert L[0].attention is not L[1].attention
    s = share.shared_student(teacher, "all", groups=2)
    assert layers(s)[0] is layers(s)[1] and layers(s)[1] is not layers(s)[2]
    # the teacher is untouched
    assert len({id(l) for l in layers(teacher)}) == 4


def test_none_student_is_the_teacher_and_mean_init_is_the_mean():
    teacher = tiny_bert()
    x, mask = ids(vocab=101)
    s = share.shared_student(teacher, "none")
    with torch.no_grad():
        assert torch.allclose(s(input_ids=x, attention_mask=mask).logits, teacher(input_ids=x, attention_mask=mask).logits)
    s = share.shared_student(teacher, "all", init="mean")
    w = torch.stack([l.attention.self.query.weight for l in teacher.bert.encoder.layer]).mean(0)
    assert torch.allclose(s.bert.encoder.layer[3].attention.self.query.weight, w)
    s = share.shared_student(teacher, "all", init="last")
    assert torch.equal(s.bert.encoder.layer[0].output.dense.weight, teacher.bert.encoder.layer[3].output.dense.weight)


def test_factorized_embedding_svd():
    teacher = tiny_bert()
    full = share.shared_student(teacher, "none", embedding_size=16)  # full rank: the same table
    x, mask = ids(vocab=101)
    with torch.no_grad():
        assert torch.allclose(full(input_ids=x, attention_mask=mask).logits,
                              teacher(input_ids=x, attention_mask=mask).logits, atol=1e-4)
    small = share.shared_student(teacher, "none", embedding_size=4)
    emb = small.get_input_embeddings()
    assert isinstance(emb, share.FactorizedEmbedding) and 0 < emb.energy < 1
    assert sum(p.numel() for p in emb.parameters()) == share.factorized_params(101, 4, 16) == 101 * 4 + 4 * 16
    # the truncated SVD is the best rank-4 approximation: better than a random rank-4 one
    table = teacher.get_input_embeddings().weight
    err = (emb.weight - table).norm()
    rand = torch.randn(101, 4) @ torch.linalg.lstsq(torch.randn(101, 4), table).solution
    assert err < (rand - table).norm()


# ------------------------------------------------------------------ MiniViT
CFG = ViTConfig(image_size=28, patch_size=7, dim=16, depth=4, heads=2, mlp_ratio=2.0)


def images(n=3, seed=0):
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def test_minivit_plain_sharing_equals_vit_share_weights():
    torch.manual_seed(0)
    vit = VisionTransformer(ViTConfig(**{**CFG.to_dict(), "share_weights": True})).eval()
    mini = share.MiniViT(share.MiniViTConfig.from_vit(CFG, repeats=4))
    mini.load_state_dict(vit.state_dict(), strict=True)
    mini.eval()
    x = images()
    with torch.no_grad():
        assert torch.allclose(mini(pixel_values=x).logits, vit(pixel_values=x).logits, atol=1e-5)
    assert bench.count_params(mini) == bench.count_params(vit)


def test_minivit_transforms_start_as_plain_sharing_and_count():
    torch.manual_seed(0)
    plain = share.MiniViT(share.MiniViTConfig.from_vit(CFG, repeats=2)).eval()
    full = share.MiniViT(share.MiniViTConfig.from_vit(CFG, repeats=2, attention_transform=True,
                                                      mlp_transform=True)).eval()
    full.load_state_dict(plain.state_dict(), strict=False)
    x = images()
    with torch.no_grad():
        a = plain(pixel_values=x, output_attentions=True)
        b = full(pixel_values=x, output_attentions=True)
    assert torch.allclose(a.logits, b.logits, atol=1e-5)
    assert len(b.attentions) == 4 and b.attentions[0].shape == (3, 2, 17, 17)
    extra = 4 * (2 * (2 * 2 + 2) + (16 * 9 + 16))  # per layer: two head mixes, one depthwise 3x3 over 16 channels
    assert bench.count_params(full) - bench.count_params(plain) == extra
    unshared = VisionTransformer(CFG)
    block = sum(p.numel() for p in unshared.blocks[0].attn.parameters()) + \
        sum(p.numel() for p in unshared.blocks[0].mlp.parameters())
    assert bench.count_params(unshared) - bench.count_params(plain) == 2 * block


def test_minivit_from_vit_and_untie():
    torch.manual_seed(0)
    vit = VisionTransformer(CFG).eval()
    mini = share.MiniViT.from_vit(vit, share.MiniViTConfig.from_vit(CFG, repeats=2), init="mean").eval()
    w = (vit.blocks[2].attn.qkv.weight + vit.blocks[3].attn.qkv.weight) / 2
    assert torch.allclose(mini.blocks[3].attn.qkv.weight, w)
    assert torch.equal(mini.blocks[3].norm1.weight, vit.blocks[3].norm1.weight)
    free = share.untie(mini).eval()
    assert free.blocks[0].attn is not free.blocks[1].attn
    assert bench.count_params(free) == bench.count_params(vit)
    x = images()
    with torch.no_grad():
        assert torch.allclose(free(pixel_values=x).logits, mini(pixel_values=x).logits, atol=1e-6)


def test_layer_gradient_norms_split_the_shared_gradient():
    torch.manual_seed(0)
    mini = share.MiniViT(share.MiniViTConfig.from_vit(CFG, repeats=4))
    batch = {"pixel_values": images(8), "labels": torch.randint(0, 10, (8,))}
    norms = share.layer_gradient_norms(mini, batch)
    assert norms.shape == (4,) and (norms > 0).all()
    # the per-layer contributions add up to the shared weights' gradient
    free = share.untie(mini)
    free.zero_grad()
    torch.nn.functional.cross_entropy(free(pixel_values=batch["pixel_values"]).logits, batch["labels"]).backward()
    mini.zero_grad()
    torch.nn.functional.cross_entropy(mini(pixel_values=batch["pixel_values"]).logits, batch["labels"]).backward()
    total = sum(b.attn.qkv.weight.grad for b in free.blocks)
    assert torch.allclose(total, mini.blocks[0].attn.qkv.weight.grad, atol=1e-6)
    assert 0 <= share.gradient_spread(norms) < 2
    sims = share.consecutive_similarity(mini, images(4))
    assert sims.shape == (3,) and (sims.abs() <= 1 + 1e-5).all()


def test_minivit_loss_runs_and_relations_behave():
    torch.manual_seed(0)
    teacher = VisionTransformer(CFG).eval()
    student = share.MiniViT(share.MiniViTConfig.from_vit(CFG, repeats=2, attention_transform=True))
    batch = {"pixel_values": images(4), "labels": torch.randint(0, 10, (4,))}
    loss_fn = share.minivit_loss(teacher, teacher, alpha=0.5, relation_weight=1.0, hidden_weight=1.0)
    loss, logs = loss_fn(student, batch)
    loss.backward()
    assert set(logs) == {"kd", "qkv_relation", "hidden_relation"}
    assert student.blocks[0].attn.qkv.weight.grad is not None
    x = torch.randn(2, 5, 12)
    y = torch.randn(2, 5, 12)
    assert share.relation_loss(y, x, 2) > share.relation_loss(x, x, 2)  # cross-entropy is smallest at the teacher
    assert share.hidden_relation_loss(x, x) < 1e-10
    with pytest.raises(LightKDError, match="needs a logit teacher"):
        share.minivit_loss()


# ---------------------------------------------------------------- bad input
def test_bad_input():
    with pytest.raises(LightKDError, match="sharing mode"):
        share.SharedConfig(sharing="layers")
    with pytest.raises(LightKDError, match="sharing mode"):
        share.shared_student(tiny_bert(), "everything")
    with pytest.raises(LightKDError, match="larger than the hidden size"):
        share.SharedConfig(embedding_size=1024)
    with pytest.raises(LightKDError, match="positive integer"):
        share.SharedConfig(embedding_size=0)
    with pytest.raises(LightKDError, match="larger than the hidden size"):
        share.shared_student(tiny_bert(), "none", embedding_size=32)
    with pytest.raises(LightKDError, match="do not divide"):
        share.SharedConfig(num_groups=5)
    with pytest.raises(LightKDError, match="do not divide"):
        share.shared_student(tiny_bert(), "all", groups=3)
    with pytest.raises(LightKDError, match="repeats must be a positive integer"):
        share.MiniViTConfig.from_vit(CFG, repeats=0)
    with pytest.raises(LightKDError, match="does not divide the depth"):
        share.MiniViTConfig.from_vit(CFG, repeats=3)
    with pytest.raises(LightKDError, match="init must be"):
        share.shared_student(tiny_bert(), "all", init="random")


# ---------------------------------------------------------------- exercises
def test_exercise_checks():
    assert share.check_factorized_params(lambda V, E, H: V * E + E * H, seed=0)
    assert not share.check_factorized_params(lambda V, E, H: V * H, seed=0)
    assert share.check_tied_indices(lambda m, d, g: share.tied_indices(m, d, g), seed=0)
    assert not share.check_tied_indices(lambda m, d, g: (list(range(d)), list(range(d))), seed=0)
