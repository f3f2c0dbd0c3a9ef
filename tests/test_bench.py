"""bench: round-robin latency with per-round speed-ups, and the ONNX path
(export, int8, runner) on a tiny BERT and a tiny lightkd ViT."""
import pytest
import torch
from torch import nn

from lightkd import bench, train
from lightkd.common import LightKDError
from lightkd.models import ModelOutput, ViTConfig, VisionTransformer

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def tiny_bert():
    from transformers import BertConfig, BertForSequenceClassification
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64, num_labels=3)
    return BertForSequenceClassification(cfg).eval()


@pytest.fixture(scope="module")
def tiny_vit():
    torch.manual_seed(0)
    return VisionTransformer(ViTConfig(dim=16, depth=2, heads=2)).eval()


def padded(model, batch_size, seq_len, seed):
    x = bench.text_inputs(model, batch_size, seq_len, seed=seed)
    x["attention_mask"][0, seq_len // 2:] = 0  # one padded sentence
    return x


def test_onnx_text_equals_torch_at_other_shapes_and_int8_is_close(tiny_bert, tmp_path):
    path = bench.export_onnx(tiny_bert, tmp_path / "bert.onnx", bench.text_inputs(tiny_bert, 2, 16))
    runner = bench.OnnxRunner(path)
    for batch_size, seq_len in ((2, 16), (1, 9), (5, 40)):
        x = padded(tiny_bert, batch_size, seq_len, seed=seq_len)
        with torch.no_grad():
            ref = tiny_bert(**x).logits
        out = runner(**x)
        assert isinstance(out, ModelOutput) and out.logits.shape == ref.shape
        torch.testing.assert_close(out.logits, ref, atol=1e-5, rtol=1e-4)
    # token_type_ids the graph does not take are dropped; a missing mask is all ones
    x = bench.text_inputs(tiny_bert, 3, 12, seed=1)
    with torch.no_grad():
        ref = tiny_bert(**x).logits
    torch.testing.assert_close(runner(input_ids=x["input_ids"], token_type_ids=torch.zeros_like(x["input_ids"])).logits,
                               ref, atol=1e-5, rtol=1e-4)

    int8 = bench.OnnxRunner(bench.onnx_quantize_dynamic(path, tmp_path / "bert-int8.onnx"))
    assert int8.size_on_disk() < runner.size_on_disk()
    x = padded(tiny_bert, 4, 20, seed=3)
    with torch.no_grad():
        ref = tiny_bert(**x).logits
    err = (int8(**x).logits - ref).abs().max() / ref.abs().max()
    assert 0 < err < 0.1, "int8 is close to fp32 but not identical"


def test_runner_works_with_evaluate_and_latency(tiny_bert, tmp_path):
    runner = bench.OnnxRunner(bench.export_onnx(tiny_bert, tmp_path / "b.onnx", bench.text_inputs(tiny_bert, 2, 8)),
                              optimize=False)
    batches = [dict(padded(tiny_bert, 4, 10, seed=s), labels=torch.tensor([0, 1, 2, 0]), index=torch.arange(4 * s, 4 * s + 4))
               for s in range(2)]
    assert train.evaluate(runner, batches, bf16=False)["accuracy"] == train.evaluate(tiny_bert, batches, bf16=False)["accuracy"]
    assert runner.eval() is runner
    assert bench.latency(runner, batches[0], repeats=2, warmup=1).median_ms > 0
    got = bench.compare_latency({"torch": tiny_bert, "onnx": runner}, batches[0], rounds=3)
    assert got["onnx"].speedup > 0 and got["torch"].speedup == 1.0


def test_onnx_vit_equals_torch_and_int8_is_close(tiny_vit, tmp_path):
    images = torch.rand(4, 1, 28, 28)
    path = bench.export_onnx(tiny_vit, tmp_path / "vit.onnx", images)
    runner = bench.OnnxRunner(path)
    assert runner.input_names == ["pixel_values"]
    other = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        ref = tiny_vit(pixel_values=other).logits
    torch.testing.assert_close(runner(pixel_values=other).logits, ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(runner(other).logits, ref, atol=1e-5, rtol=1e-4)  # positional, like a torch model
    int8 = bench.OnnxRunner(bench.onnx_quantize_dynamic(path, tmp_path / "vit-int8.onnx"))
    out = int8(other).logits
    # a 16-wide random model has tiny logits, so 8-bit rounding shows more than on a trained one
    assert 0 < (out - ref).norm() / ref.norm() < 0.3
    assert torch.nn.functional.cosine_similarity(out.flatten(), ref.flatten(), dim=0) > 0.95
    with pytest.raises(LightKDError, match="batch size"):  # the ViT reads its batch with len(): fixed at export
        runner(torch.rand(3, 1, 28, 28))


def test_runner_bad_input(tiny_bert, tmp_path):
    with pytest.raises(LightKDError, match="path"):
        bench.OnnxRunner(tmp_path / "missing.onnx")
    runner = bench.OnnxRunner(bench.export_onnx(tiny_bert, tmp_path / "b.onnx", bench.text_inputs(tiny_bert, 2, 8)))
    with pytest.raises(LightKDError, match="input_ids"):
        runner(attention_mask=torch.ones(1, 4, dtype=torch.long))
    with pytest.raises(LightKDError, match="num_threads"):
        bench.OnnxRunner(runner.path, num_threads=0)
    with pytest.raises(LightKDError, match="inputs"):
        bench.export_onnx(tiny_bert, tmp_path / "x.onnx", [1, 2])


class Sleep(nn.Module):
    """Takes ``ms`` per call, plus whatever a burst of load adds."""

    def __init__(self, ms):
        super().__init__()
        self.ms = ms

    def forward(self, x):
        import time
        time.sleep(self.ms / 1000)
        return x


def test_compare_latency_per_round_ratio_and_reference():
    x = torch.zeros(1)
    got = bench.compare_latency({"slow": Sleep(60), "fast": Sleep(20)}, x, rounds=5, warmup=1, reference="slow")
    assert got["slow"].speedup == 1.0 and got["slow"].reference == "slow"
    assert 1.8 < got["fast"].speedup < 3.3  # 3x, less what waking up adds on a busy machine
    assert got["fast"].ratio == got["fast"].speedup
    assert got["fast"].speedup_q25 <= got["fast"].speedup <= got["fast"].speedup_q75
    assert "vs 'slow'" in repr(got["fast"])
    assert got["fast"].speedup_over(got["slow"]) == got["fast"].speedup
    assert 0.3 < got["slow"].speedup_over(got["fast"]) < 0.56
    default = bench.compare_latency({"a": Sleep(1), "b": Sleep(1)}, x, rounds=2, repeats=2)
    assert default["b"].reference == "a" and len(default["b"].times_ms) == 2
    with pytest.raises(LightKDError, match="reference"):
        bench.compare_latency({"a": Sleep(1)}, x, rounds=1, reference="teacher")
    with pytest.raises(LightKDError, match="repeats"):
        bench.compare_latency({"a": Sleep(1)}, x, rounds=1, repeats=0)


def test_per_round_ratio_survives_a_burst_of_load():
    """Round 2 is five times slower for both models (a burst): the ratio of
    medians of separately timed runs would move, the per-round median does not."""
    class Bursty(nn.Module):
        calls = 0

        def __init__(self, ms):
            super().__init__()
            self.ms = ms

        def forward(self, x):
            import time
            Bursty.calls += 1
            time.sleep(self.ms / 1000 * (5 if 5 <= Bursty.calls <= 8 else 1))
            return x
    got = bench.compare_latency({"ref": Bursty(40), "half": Bursty(20)}, torch.zeros(1), rounds=5, warmup=1)
    assert 1.5 < got["half"].speedup < 2.2


def test_cpu_features():
    got = bench.cpu_features()
    assert set(got) == {"isa", "vnni", "bf16", "amx"} and isinstance(got["isa"], str)
    assert all(isinstance(got[k], bool) for k in ("vnni", "bf16", "amx"))
