"""Unit tests for lightkd.quant: the from-scratch quantizer against torch's own,
bad inputs, Q8BERT's fake-quant modules, dynamic int8, ONNX Runtime."""
import copy
import importlib.util

import pytest
import torch
import torch.nn as nn

from lightkd import quant
from lightkd.common import LightKDError


def tiny_bert(seed=0):
    from transformers import BertConfig, BertForSequenceClassification
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, num_labels=2)
    return BertForSequenceClassification(config).eval()


def batches(n=3, batch=4, seq=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for k in range(n):
        ids = torch.randint(1, 120, (batch, seq), generator=g)
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids[:, 0] % 2,
                    "index": torch.arange(k * batch, (k + 1) * batch)})
    return out


# ------------------------------------------------------------ the quantizer
def test_quant_range():
    assert quant.quant_range(8, "symmetric") == (-127, 127)
    assert quant.quant_range(8, "asymmetric") == (0, 255)
    assert quant.quant_range(4, "symmetric") == (-7, 7)
    assert quant.quant_range(1, "asymmetric") == (0, 1)


@pytest.mark.parametrize("scheme", quant.SCHEMES)
@pytest.mark.parametrize("granularity", quant.GRANULARITIES)
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_matches_torch_fake_quantize(scheme, granularity, bits):
    g = torch.Generator().manual_seed(bits)
    for trial in range(10):
        x = torch.randn(6, 17, generator=g) * (trial + 1) + (trial - 5) * 0.3
        ours = quant.fake_quantize(x, bits, scheme, granularity, axis=0)
        theirs = quant.torch_fake_quantize(x, bits, scheme, granularity, axis=0)
        scale, _ = quant.scale_and_zero_point(x, bits, scheme, granularity)
        # torch multiplies by 1/S where we divide by S: a tie may round the other way, one step at most
        step = scale.max().item()
        assert (ours - theirs).abs().max() <= step * 1.001
        assert ((ours - theirs).abs() > 1e-6).float().mean() < 0.01


def test_round_trip_error_is_at_most_half_a_step():
    x = torch.randn(1000)
    for scheme in quant.SCHEMES:
        scale, zp = quant.scale_and_zero_point(x, 8, scheme)
        x_hat = quant.dequantize(quant.linear_quantize(x, scale, zp, 8, scheme), scale, zp)
        assert (x - x_hat).abs().max() <= scale / 2 + 1e-6


def test_asymmetric_keeps_zero_exact_and_uses_the_full_grid():
    x = torch.rand(100) * 3 + 1  # all positive: the range is stretched to contain 0
    scale, zp = quant.scale_and_zero_point(x, 8, "asymmetric")
    assert int(zp) == 0
    q = quant.linear_quantize(torch.cat([x, torch.zeros(1)]), scale, zp, 8, "asymmetric")
    assert q.max() == 255 and q[-1] == 0


def test_per_channel_shapes_and_error():
    w = torch.randn(8, 16) * torch.logspace(-2, 1, 8).unsqueeze(1)
    scale, zp = quant.scale_and_zero_point(w, 4, "symmetric", "per_channel", axis=0)
    assert scale.shape == (8,) and zp.shape == (8,) and zp.dtype == torch.int32
    assert quant.quantization_error(w, 4, granularity="per_channel") < quant.quantization_error(w, 4)
    scale1, _ = quant.scale_and_zero_point(w, 4, "symmetric", "per_channel", axis=1)
    assert scale1.shape == (16,)
    assert quant.better_granularity(w, 4) == "per_channel"


def test_codes_are_int32_and_in_range():
    x = torch.randn(50) * 100
    for bits in (2, 5, 8, 12, 16):
        for scheme in quant.SCHEMES:
            scale, zp = quant.scale_and_zero_point(x, bits, scheme)
            q = quant.linear_quantize(x, scale, zp, bits, scheme)
            lo, hi = quant.quant_range(bits, scheme)
            assert q.dtype == torch.int32 and q.min() >= lo and q.max() <= hi


# ----------------------------------------------------------- bad input
@pytest.mark.parametrize("bits", [0, -1, 17, 100, 2.5, True, "8", None])
def test_bad_bits(bits):
    with pytest.raises(LightKDError, match="bits"):
        quant.fake_quantize(torch.randn(4), bits)


def test_one_bit_symmetric_is_refused_but_asymmetric_works():
    with pytest.raises(LightKDError, match="at least 2 bits"):
        quant.fake_quantize(torch.randn(4), 1, "symmetric")
    out = quant.fake_quantize(torch.tensor([0.0, 0.2, 1.0]), 1, "asymmetric")
    assert out.tolist() == [0.0, 0.0, 1.0]


@pytest.mark.parametrize("dtype", [torch.int8, torch.int32, torch.int64, torch.bool])
def test_integer_tensor_is_refused(dtype):
    with pytest.raises(LightKDError, match="floating-point"):
        quant.scale_and_zero_point(torch.ones(4, dtype=dtype))
    with pytest.raises(LightKDError, match="floating-point"):
        quant.linear_quantize(torch.ones(4, dtype=dtype), 1.0, 0)


def test_unknown_scheme_and_granularity():
    with pytest.raises(LightKDError, match="unknown scheme"):
        quant.fake_quantize(torch.randn(4), 8, "affine")
    with pytest.raises(LightKDError, match="unknown granularity"):
        quant.fake_quantize(torch.randn(4), 8, "symmetric", "per_row")
    with pytest.raises(LightKDError, match="unknown scheme"):
        quant.quant_range(8, "sym")


def test_not_a_tensor_empty_and_bad_axis():
    with pytest.raises(LightKDError, match="torch tensor"):
        quant.fake_quantize([1.0, 2.0])
    with pytest.raises(LightKDError, match="empty"):
        quant.fake_quantize(torch.empty(0))
    with pytest.raises(LightKDError, match="axis"):
        quant.fake_quantize(torch.randn(3, 4), granularity="per_channel", axis=2)
    with pytest.raises(LightKDError, match="scale must be positive"):
        quant.linear_quantize(torch.randn(3), 0.0, 0)


@pytest.mark.parametrize("scheme", quant.SCHEMES)
@pytest.mark.parametrize("granularity", quant.GRANULARITIES)
def test_zero_range_tensor_does_not_divide_by_zero(scheme, granularity):
    zeros = torch.zeros(3, 5)
    scale, zp = quant.scale_and_zero_point(zeros, 8, scheme, granularity)
    assert torch.isfinite(scale).all() and (scale > 0).all()
    assert torch.equal(quant.fake_quantize(zeros, 8, scheme, granularity), zeros)
    assert quant.quantization_error(zeros, 8, scheme, granularity) == 0.0
    same = torch.full((3, 5), -2.5)  # all equal, not zero: reproduced exactly
    assert torch.allclose(quant.fake_quantize(same, 8, scheme, granularity), same)
    one_zero_row = torch.cat([torch.zeros(1, 5), torch.randn(2, 5)])
    assert torch.isfinite(quant.fake_quantize(one_zero_row, 4, scheme, "per_channel")).all()


# ------------------------------------------------------------- Q8BERT pieces
def test_ste_passes_gradient_straight_through():
    x = torch.randn(20, requires_grad=True)
    y = quant.fake_quantize_ste(x, x.detach().abs().max(), 4)
    assert torch.allclose(y, quant.fake_quantize(x.detach(), 4), atol=1e-6)
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones(20))


def test_quant_linear_ema_starts_from_first_batch_and_barely_moves():
    torch.manual_seed(0)
    layer = quant.QuantLinear.from_linear(nn.Linear(8, 4), bits=8, ema_decay=0.9999).train()
    x1, x2 = torch.randn(5, 8), 10 * torch.randn(5, 8)
    layer(x1)
    assert torch.isclose(layer.act_max, x1.abs().max())
    layer(x2)
    expected = x1.abs().max() - 1e-4 * (x1.abs().max() - x2.abs().max())
    assert torch.isclose(layer.act_max, expected)


def test_quant_linear_forward_is_fake_quantized_linear():
    torch.manual_seed(1)
    lin = nn.Linear(8, 4)
    layer = quant.QuantLinear.from_linear(copy.deepcopy(lin), bits=4, act_bits=8).train()
    x = torch.randn(5, 8)
    out = layer(x)
    x_q = quant.fake_quantize_ste(x, x.abs().max(), 8)
    w_q = quant.fake_quantize_ste(lin.weight.detach(), lin.weight.abs().max(), 4)
    assert torch.allclose(out, nn.functional.linear(x_q, w_q, lin.bias), atol=1e-6)
    layer.eval()
    bias_step = (x.abs().max() / 127) * (lin.weight.abs().max() / 7)  # the int32 accumulator's S_x S_w
    with torch.no_grad():  # eval: the bias moves to its grid, half a step at most
        assert (layer(x) - out).abs().max() <= bias_step / 2 + 1e-6
        assert not torch.equal(layer(x), out)


def test_quant_linear_without_range_says_what_to_do():
    layer = quant.QuantLinear.from_linear(nn.Linear(3, 2)).eval()
    with pytest.raises(LightKDError, match="calibrate"):
        layer(torch.randn(1, 3))


def test_prepare_q8bert_swaps_linear_and_word_position_embeddings():
    model = quant.prepare_q8bert(tiny_bert())
    mods = quant.quant_modules(model)
    n_linear = sum(isinstance(m, quant.QuantLinear) for m in mods.values())
    assert n_linear == 2 * 6 + 2  # q, k, v, attn out, intermediate, output per layer + pooler + classifier
    assert isinstance(model.bert.embeddings.word_embeddings, quant.QuantEmbedding)
    assert isinstance(model.bert.embeddings.position_embeddings, quant.QuantEmbedding)
    assert type(model.bert.embeddings.token_type_embeddings) is nn.Embedding
    assert not any(isinstance(m, quant.QuantLinear) for m in model.modules() if isinstance(m, nn.LayerNorm))
    with pytest.raises(LightKDError, match="bits"):
        quant.prepare_q8bert(tiny_bert(), bits=0)
    with pytest.raises(LightKDError, match="no nn.Linear"):
        quant.prepare_q8bert(nn.Sequential(nn.ReLU()))
    with pytest.raises(LightKDError, match="ema_decay"):
        quant.prepare_q8bert(tiny_bert(), ema_decay=1.0)


def test_quant_embedding_equals_lookup_in_quantized_table():
    emb = nn.Embedding(50, 6)
    q = quant.QuantEmbedding.from_embedding(copy.deepcopy(emb), bits=4)
    ids = torch.randint(0, 50, (3, 7))
    table = quant.fake_quantize(emb.weight.detach(), 4)
    assert torch.allclose(q(ids), table[ids], atol=1e-6)


def test_ptq_static_calibration_and_eight_bits_close_to_float():
    model = tiny_bert()
    data = batches()
    ref = model(**{k: data[0][k] for k in ("input_ids", "attention_mask")}).logits
    q8 = quant.ptq_static(model, data, bits=8, observer="minmax")
    pct = quant.ptq_static(model, data, bits=8, observer="percentile", percentile=99.0)
    for a, b in zip(quant.quant_modules(q8).values(), quant.quant_modules(pct).values()):
        if isinstance(a, quant.QuantLinear):
            assert b.act_max <= a.act_max + 1e-6 and a.observed == len(data)
    with torch.no_grad():
        out = q8(**{k: data[0][k] for k in ("input_ids", "attention_mask")}).logits
    assert (out - ref).abs().max() < 0.05 * ref.abs().max() + 1e-3
    with pytest.raises(LightKDError, match="unknown observer"):
        quant.ptq_static(model, data, observer="mse")
    with pytest.raises(LightKDError, match="prepare_q8bert"):
        quant.calibrate(tiny_bert(), data)
    with pytest.raises(LightKDError, match="percentile"):
        quant.ptq_static(model, data, observer="percentile", percentile=0)


def test_evaluate_ptq_is_ptq_static_scored_and_cached(tmp_cache, monkeypatch):
    from lightkd import train
    model, calibration, test = tiny_bert(), batches(n=4, seed=1), batches(n=2, seed=2)
    settings = dict(bits=4, act_bits=8, max_batches=3)
    expected = train.evaluate(quant.ptq_static(model, calibration, **settings), test, bf16=False)
    first = quant.evaluate_ptq(model, calibration, test, **settings)
    assert torch.equal(first["logits"], expected["logits"]) and first["accuracy"] == expected["accuracy"]
    built = []
    real = quant.ptq_static
    monkeypatch.setattr(quant, "ptq_static", lambda *a, **k: built.append(1) or real(*a, **k))
    again = quant.evaluate_ptq(model, calibration, test, **settings)
    assert not built and torch.equal(again["logits"], first["logits"]), "a second call reads the cache"
    # anything that decides the quantized model is in the key: settings, calibration data, weights
    other = quant.evaluate_ptq(model, calibration, test, bits=2, act_bits=8, max_batches=3)
    assert built and not torch.equal(other["logits"], first["logits"])
    built.clear()
    quant.evaluate_ptq(model, batches(n=4, seed=3), test, **settings)
    assert built, "other calibration batches are another entry"
    built.clear()
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.classifier.weight.mul_(-1)
    flipped = quant.evaluate_ptq(changed, calibration, test, **settings)
    assert built and not torch.equal(flipped["logits"], first["logits"]), "weights changed in place: a new entry"
    with pytest.raises(LightKDError, match="calibration is empty"):
        quant.evaluate_ptq(model, [], test)
    with pytest.raises(LightKDError, match="max_batches"):
        quant.evaluate_ptq(model, calibration, test, max_batches=0)


def test_a_dynamic_int8_model_is_keyed_by_its_int8_weights(tmp_cache):
    from lightkd import train, zoo
    int8 = quant.quantize_dynamic_int8(tiny_bert())
    assert zoo.content_identity(int8) == zoo.content_identity(quant.quantize_dynamic_int8(tiny_bert()))
    other = tiny_bert()
    with torch.no_grad():
        other.bert.encoder.layer[0].intermediate.dense.weight.mul_(2)
    assert zoo.content_identity(quant.quantize_dynamic_int8(other)) != zoo.content_identity(int8)
    assert torch.equal(zoo.cached_evaluate(int8, batches(), bf16=False)["logits"],
                       train.evaluate(int8, batches(), bf16=False)["logits"])


def test_evaluate_ptq_reads_a_shuffled_iterator_as_ptq_static_does(tmp_cache):
    from lightkd import data, train, zoo
    tok = zoo.load_tokenizer()
    split = data.TextSplit(texts=[f"sentence number {i} is {'good' if i % 2 else 'bad'}" for i in range(40)],
                           labels=[i % 2 for i in range(40)])
    model = tiny_bert()
    model.resize_token_embeddings(tok.vocab_size)
    test = data.text_batches(split, tok, batch_size=8)
    plain, cached = (data.text_batches(split, tok, batch_size=8, shuffle=True, seed=0) for _ in range(2))
    for _ in range(2):  # the second call of each sees the iterator's second epoch
        expected = train.evaluate(quant.ptq_static(model, plain, bits=4, act_bits=8, max_batches=2), test, bf16=False)
        got = quant.evaluate_ptq(model, cached, test, bits=4, act_bits=8, max_batches=2)
        assert torch.equal(got["logits"], expected["logits"])
    assert plain.epoch == cached.epoch == 2


def test_qat_trains_through_the_train_loop():
    from lightkd import train
    model = quant.prepare_q8bert(tiny_bert(), bits=4)
    before = model.bert.encoder.layer[0].intermediate.dense.weight.detach().clone()
    train.fit(model, batches(), None, max_steps=3, lr=1e-3, bf16=False, progress=False)
    after = model.bert.encoder.layer[0].intermediate.dense.weight
    assert not torch.equal(before, after)
    assert all(m.observed == 3 for m in model.modules() if isinstance(m, quant.QuantLinear))
    state = model.state_dict()
    assert any(k.endswith("act_max") for k in state)  # ranges travel with the weights (zoo.cached)


# ---------------------------------------------------------- dynamic int8
def test_dynamic_int8_close_to_float_and_four_times_smaller():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(256, 512), nn.GELU(), nn.Linear(512, 256)).eval()
    q = quant.quantize_dynamic_int8(mlp)
    assert q.lightkd_backend in quant.dynamic_int8_backends()
    x = torch.randn(4, 256)
    with torch.no_grad():
        assert (q(x) - mlp(x)).abs().max() < 0.05 * mlp(x).abs().max()
    from lightkd import bench
    ratio = bench.size_on_disk(quant.linear_weight_state(mlp)) / bench.size_on_disk(quant.linear_weight_state(q))
    assert ratio > 3.5
    assert isinstance(mlp[0], nn.Linear)  # the original is untouched


def test_evaluate_never_autocasts_int8_kernels_to_bf16(monkeypatch):
    """On a CPU with bf16 units ``evaluate`` autocasts by default; torch's int8
    kernels reject bf16 inputs, so a quantized model is scored in fp32 there."""
    from lightkd import train
    monkeypatch.setattr(train, "bf16_pays", lambda: True)  # as on a CPU with AMX, whatever this one has
    model = tiny_bert()
    int8 = quant.quantize_dynamic_int8(model)
    assert train.has_int8_kernels(int8) and not train.has_int8_kernels(model)
    auto = train.evaluate(int8, batches())
    assert not train.evaluate(model, batches())["logits"].requires_grad  # scoring keeps no autograd graph
    assert torch.equal(auto["logits"], train.evaluate(int8, batches(), bf16=False)["logits"])
    # a float model still autocasts under "auto": its logits differ from the fp32 ones
    assert not torch.equal(train.evaluate(model, batches())["logits"], train.evaluate(model, batches(), bf16=False)["logits"])


def test_dynamic_int8_bad_backend():
    with pytest.raises(LightKDError, match="unknown backend"):
        quant.quantize_dynamic_int8(nn.Linear(2, 2), backend="tensorrt")
    if importlib.util.find_spec("torchao") is None:
        with pytest.raises(LightKDError, match="not available"):
            quant.quantize_dynamic_int8(nn.Linear(2, 2), backend="torchao")


# ------------------------------------------------------------ exercises

def test_checks_pass_the_reference_and_fail_a_wrong_answer(capsys):
    sym = lambda x, s, z, b: quant.linear_quantize(x, s, z, b, "asymmetric")
    assert quant.check_linear_quantize(sym, trials=10, seed=0)
    no_clamp = lambda x, s, z, b: (torch.round(x / s) + z).to(torch.int32) + 1
    assert not quant.check_linear_quantize(no_clamp, trials=10, seed=0)
    assert quant.check_dequantize(lambda q, s, z: quant.dequantize(q, s, z), trials=10, seed=0)
    assert not quant.check_dequantize(lambda q, s, z: q.float() * s, trials=20, seed=0)
    assert quant.check_pick_granularity(quant.better_granularity, trials=10, seed=0)
    assert not quant.check_pick_granularity(lambda w, b: "per_tensor", trials=20, seed=0)

    def stub(x, s, z, b):
        raise NotImplementedError
    assert not quant.check_linear_quantize(stub)
    assert "not implemented" in capsys.readouterr().out


def test_q8bert_finetune_caches_and_has_a_float_control(tmp_path, monkeypatch):
    from lightkd import data, zoo
    monkeypatch.setenv("LIGHTKD_CACHE", str(tmp_path))
    monkeypatch.setenv("LIGHTKD_PROGRESS", "0")
    tokenizer = zoo.load_tokenizer()
    model = tiny_bert()
    model.resize_token_embeddings(tokenizer.vocab_size)
    split = data.TextSplit(["a fine film", "dull and long", "a joy", "a mess"] * 4, [1, 0, 1, 0] * 4)
    dataset = data.Dataset("toy", ("neg", "pos"), split, split, split)
    recipe = quant.QATRecipe(bits=4, steps=2, batch_size=4)
    qat = quant.q8bert_finetune(model, tokenizer, dataset, recipe, bf16=False, verbose=False)
    assert isinstance(qat.bert.encoder.layer[0].intermediate.dense, quant.QuantLinear)
    assert qat.lightkd_info["steps"] == 2 and qat.lightkd_info["ema_relative_change_max"] >= 0
    assert type(model.bert.encoder.layer[0].intermediate.dense) is nn.Linear  # the original is untouched
    again = quant.q8bert_finetune(model, tokenizer, dataset, recipe, bf16=False, verbose=False)
    assert all(torch.equal(a, b) for a, b in zip(qat.state_dict().values(), again.state_dict().values()))
    control = quant.q8bert_finetune(model, tokenizer, dataset, recipe, bf16=False, fake_quant=False, verbose=False)
    assert not quant.quant_modules(control) and control.lightkd_cache != qat.lightkd_cache
