"""Checks of the vision recipes beyond 'the tiny config runs' (tests/test_recipes.py
runs every recipe's tiny config): the paper-scale code path (a `datasets` image
folder, a transformers checkpoint) exercised offline on a saved tiny model, the
hub-checkpoint converter, and that a recipe's result does not depend on what ran
before it in the process."""
import json

import numpy as np
import pytest
import torch

from lightkd import models
from lightkd.recipes import RECIPES

VISION = ("deit", "albert", "minivit", "dynamicvit", "vlm")


def test_vision_recipes_are_registered_with_matching_options():
    for name in VISION:
        r = RECIPES[name]
        assert set(r.paper) == set(r.tiny), name          # every paper option can be set on the tiny run too
        assert r.notes and r.chapter[:2] in ("07", "08", "09", "10")


@pytest.mark.parametrize("distillation_token", [False, True])
def test_from_transformers_inverts_to_transformers(distillation_token):
    torch.manual_seed(0)
    cfg = models.ViTConfig(image_size=8, patch_size=2, in_channels=3, dim=16, depth=2, heads=2,
                           distillation_token=distillation_token, pixel_mean=0.0, pixel_std=1.0)
    ours = models.VisionTransformer(cfg).eval()
    back = models.from_transformers(models.to_transformers(ours))
    x = torch.rand(3, 3, 8, 8)
    assert back.config.distillation_token == distillation_token
    assert torch.allclose(ours(pixel_values=x).logits, back(pixel_values=x).logits, atol=1e-6)


def test_seeded_result_does_not_depend_on_earlier_work(tmp_path):
    r = RECIPES["minivit"]
    cfg = r.config(tiny=True, max_steps=3, backbone_steps=3, teacher_steps=3)
    first = r.run(cfg, tmp_path / "a")["metrics"]["minivit.student.accuracy"]["value"]
    torch.rand(1000)                                       # move the global RNG
    second = r.run(cfg, tmp_path / "b")["metrics"]["minivit.student.accuracy"]["value"]
    assert first == second
    assert json.loads((tmp_path / "a" / "minivit.json").read_text())["chapter"] == "08_sharing"


def test_paper_path_runs_offline_on_an_image_folder_and_a_saved_checkpoint(tmp_path):
    """The ImageNet path (datasets imagefolder + a transformers DeiT and its image
    processor) on 16 pictures and a 16-pixel ViT saved locally."""
    pytest.importorskip("datasets")
    from PIL import Image
    from transformers import ViTImageProcessor
    rng = np.random.default_rng(0)
    for split in ("train", "validation"):
        for label in ("a", "b"):
            folder = tmp_path / "images" / split / label
            folder.mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    torch.manual_seed(0)
    vit = models.VisionTransformer(models.ViTConfig(image_size=16, patch_size=4, in_channels=3, num_classes=2,
                                                    dim=16, depth=4, heads=2, pixel_mean=0.0, pixel_std=1.0))
    hf = models.to_transformers(vit)
    hf.save_pretrained(tmp_path / "vit")
    ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(tmp_path / "vit")

    r = RECIPES["dynamicvit"]
    cfg = r.config(tiny=False, data=str(tmp_path / "images"), backbone=str(tmp_path / "vit"), max_steps=2,
                   batch_size=4, num_workers=0, tome_r=2, bf16=False)
    out = r.run(cfg, tmp_path / "out")["metrics"]
    assert out["train.steps"]["value"] == 2
    assert 0 <= out["dynamicvit.rho0.7.accuracy"]["value"] <= 1
    assert out["dynamicvit.rho0.7.flops_ratio"]["value"] < 1
    assert (tmp_path / "out" / "dynamicvit.json").exists()
