"""Recipes for the vision and vision-language chapters (7-10).

Each recipe is one short function over lightkd's own pieces, in the order a
reader meets them in the chapter: data, teacher, student, ``train.fit``,
measurements, a results file. Two scales share the code:

- ``tiny``: images from scikit-learn's bundled digits (8 x 8, always there),
  a tiny ViT and a tiny CNN, the movie reviews, a few easy-VQA pictures; a
  handful of steps, seconds on one CPU thread. It checks the wiring, not
  the paper's numbers.
- paper scale: the hub's models and data sets (ImageNet through ``datasets``,
  DeiT / RegNet checkpoints through ``transformers``), the paper's budget.
  These need the hub and GPUs; each recipe's ``notes`` says what it assumes.

Training goes through ``lightkd.train.fit`` only, so data parallelism comes
with it (``accelerate launch --num_processes N -m lightkd.recipes NAME``).
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch

from .. import bench, data, distill, models, share, sparsify, train, vit, vlm, zoo
from ..common import LightKDError, set_seed
from ..data import ImageSplit, TextSplit
from ..results import Recorder
from .base import Recipe, saved
from .text import from_hub
from .base import device as _device  # this process's device: Accelerate's GPU, or the CPU

LOCAL_IMAGES = ("digits", "fashion_mnist")   # lightkd's offline image sets; anything else is a hub id or folder


# ------------------------------------------------------------ shared pieces
def _fit(model, batches, cfg, **kwargs):
    """``train.fit`` with the recipe's budget: ``max_steps`` if set, else ``epochs``."""
    budget = {"max_steps": cfg["max_steps"]} if cfg.get("max_steps") else {"epochs": cfg["epochs"]}
    kwargs.setdefault("lr", cfg["lr"])
    kwargs.setdefault("weight_decay", cfg.get("weight_decay", 0.05))
    return train.fit(model.to(_device()), batches, seed=cfg["seed"], bf16=cfg.get("bf16", "auto"),
                     warmup_ratio=cfg.get("warmup_ratio", 0.1), **budget, **kwargs)


class HubImages(torch.utils.data.Dataset):
    """A ``datasets`` image split as lightkd batches (``pixel_values``, ``labels``,
    ``index``): each picture resized, cropped and normalised by a transformers
    image processor (the teacher's, so teacher and student see the same pixels)."""

    def __init__(self, rows, processor):
        self.rows, self.processor = rows, processor
        self.image_key = next(k for k in ("image", "img", "pixel_values") if k in rows.column_names)
        self.label_key = next(k for k in ("label", "labels", "fine_label") if k in rows.column_names)

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        row = self.rows[i]
        pixels = self.processor(row[self.image_key].convert("RGB"), return_tensors="pt")["pixel_values"][0]
        return {"pixel_values": pixels, "labels": int(row[self.label_key]), "index": i}


def image_task(cfg: dict, processor_id: str | None = None) -> dict:
    """Train and test batches, and the image shape, for ``cfg['data']``:
    ``digits`` / ``fashion_mnist`` (lightkd's offline sets, first
    ``n_train`` / ``n_test`` images), or a hub id / local folder for
    ``datasets.load_dataset`` (``imagefolder`` when it is a folder) with the
    splits ``train`` and ``validation``, preprocessed by ``processor_id``."""
    name = cfg["data"]
    if name in LOCAL_IMAGES:
        ds = data.load_images(name)
        cut = lambda split, n: split if not n else ImageSplit(split.images[:n], split.labels[:n])
        train_split, test_split = cut(ds.train, cfg.get("n_train")), cut(ds.test, cfg.get("n_test"))
        side = train_split.images.shape[-1]
        return {"train": lambda seed: vit.AugmentedBatches(train_split, batch_size=cfg["batch_size"], seed=seed,
                                                           flip=cfg.get("flip", False)),
                "test": data.image_batches(test_split, batch_size=256), "channels": 1, "image_size": side,
                "num_classes": ds.num_labels, "pixel_mean": float(train_split.images.mean()),
                "pixel_std": float(train_split.images.std()), "n_train": len(train_split)}
    import datasets
    from transformers import AutoImageProcessor
    rows = (datasets.load_dataset("imagefolder", data_dir=name) if Path(name).is_dir()
            else datasets.load_dataset(name))
    processor = from_hub(AutoImageProcessor, processor_id)
    loader = lambda split, shuffle, seed=0: torch.utils.data.DataLoader(
        HubImages(rows[split], processor), batch_size=cfg["batch_size"], shuffle=shuffle,
        num_workers=cfg.get("num_workers", 8), generator=torch.Generator().manual_seed(seed), drop_last=shuffle)
    shape = getattr(processor, "crop_size", None) or processor.size   # DeiT: crop 224; ConvNext/RegNet: edge 224
    size = shape.get("height") or shape["shortest_edge"]
    return {"train": lambda seed: loader("train", True, seed), "test": loader("validation", False),
            "channels": 3, "image_size": size, "num_classes": rows["train"].features["label"].num_classes,
            "pixel_mean": 0.0, "pixel_std": 1.0, "n_train": len(rows["train"])}


def vit_config(cfg: dict, task: dict, **changes) -> models.ViTConfig:
    """The student's shape (``cfg['vit']``: dim, depth, heads, mlp_ratio,
    patch_size) on the task's images."""
    shape = {k: cfg[k] for k in ("dim", "depth", "heads", "mlp_ratio", "patch_size")}
    return models.ViTConfig(image_size=task["image_size"], in_channels=task["channels"],
                            num_classes=task["num_classes"], pixel_mean=task["pixel_mean"],
                            pixel_std=task["pixel_std"], **shape, **changes)


def image_teacher(cfg: dict, task: dict):
    """A hub checkpoint (``cfg['teacher']`` names one), or lightkd's SmallCNN
    trained here for ``teacher_steps`` steps (``"cnn"``)."""
    if cfg["teacher"] != "cnn":
        from transformers import AutoModelForImageClassification
        return from_hub(AutoModelForImageClassification, cfg["teacher"]).to(_device()).eval()
    set_seed(cfg["seed"])   # weights decided by the seed, not by what ran before in this process
    cnn = models.SmallCNN(num_classes=task["num_classes"], in_channels=task["channels"], width=8, hidden=32,
                          image_size=task["image_size"])
    _fit(cnn, task["train"](cfg["seed"]), {**cfg, "max_steps": cfg["teacher_steps"]}, lr=2e-3)
    return cnn.eval()


def vit_backbone(cfg: dict, task: dict) -> models.VisionTransformer:
    """A trained ViT to start from: a hub DeiT / ViT (``cfg['backbone']`` names
    one, converted by ``models.from_transformers``), or a ViT of ``cfg``'s
    shape trained here on labels for ``backbone_steps`` steps (``"train"``)."""
    if cfg["backbone"] != "train":
        from transformers import AutoModelForImageClassification
        hf = from_hub(AutoModelForImageClassification, cfg["backbone"])
        return models.from_transformers(hf).to(_device())
    set_seed(cfg["seed"])
    model = models.VisionTransformer(vit_config(cfg, task))
    _fit(model, task["train"](cfg["seed"]), {**cfg, "max_steps": cfg["backbone_steps"]})
    return model.eval()


def one_image(task: dict) -> dict:
    """One test picture, for FLOPs."""
    return {"pixel_values": next(iter(task["test"]))["pixel_values"][:1].to(_device())}


# ------------------------------------------------------------------ ch 7: DeiT
def run_deit(cfg: dict, out: Path) -> dict:
    """DeiT: a ViT student with a distillation token learns from the labels
    (class head) and from a CNN teacher's hard decisions (distillation head)."""
    rec = Recorder("07_vision", out=out, name="deit")
    task = image_task(cfg, processor_id=None if cfg["teacher"] == "cnn" else cfg["teacher"])
    teacher = image_teacher(cfg, task)
    test = task["test"]
    rec.record("teacher.accuracy", train.evaluate(teacher, test)["accuracy"], unit="fraction", note=cfg["teacher"])

    set_seed(cfg["seed"])
    student = models.VisionTransformer(vit_config(cfg, task, distillation_token=True))
    loss = vit.deit_loss_fn(teacher, kind=cfg["kind"], alpha=cfg["alpha"], tau=cfg["tau"])  # teacher online, as DeiT
    result = _fit(student, task["train"](cfg["seed"]), cfg, loss=loss)

    heads = vit.evaluate_heads(student, (train.to_device(b, _device()) for b in test))
    paper = {"tiny": 0.745, "small": 0.812}.get(cfg["student"])
    rec.record(f"deit.{cfg['kind']}.accuracy", heads["both"], unit="fraction", paper=paper,
               source="DeiT with distillation token, ImageNet top-1 (Ti 74.5, S 81.2)",
               note=f"{cfg['data']}, {result.steps} steps, class and distillation heads averaged")
    for head in ("cls", "dist"):
        rec.record(f"deit.{cfg['kind']}.head_{head}.accuracy", heads[head], unit="fraction")
    rec.model("deit_student", accuracy=heads["both"], params=bench.count_params(student),
              unique_params=bench.count_params(student), method=f"DeiT {cfg['kind']} distillation")
    rec.record("train.steps", result.steps, unit="count")
    rec.record("train.seconds", result.seconds, unit="s")
    return saved(rec)


# DeiT-Ti / DeiT-S (Touvron et al. 2021, Table 1); the training budget of facebookresearch/deit.
DEIT_SHAPES = {"tiny": dict(dim=192, depth=12, heads=3), "small": dict(dim=384, depth=12, heads=6)}

DEIT = Recipe(
    name="deit", chapter="07_vision",
    help="DeiT: a ViT with a distillation token, hard distillation from a CNN teacher",
    paper=dict(data="ILSVRC/imagenet-1k", teacher="facebook/regnet-y-160", student="tiny", **DEIT_SHAPES["tiny"],
               mlp_ratio=4.0, patch_size=16, kind="hard", alpha=0.5, tau=1.0, epochs=300, max_steps=None,
               batch_size=1024, lr=1e-3, weight_decay=0.05, warmup_ratio=5 / 300, seed=0, num_workers=8,
               teacher_steps=0, n_train=None, n_test=None, bf16="auto"),
    tiny=dict(data="digits", teacher="cnn", student="none", dim=32, depth=2, heads=2, mlp_ratio=2.0, patch_size=2,
              kind="hard", alpha=0.5, tau=1.0, epochs=1, max_steps=20, batch_size=32, lr=3e-3, weight_decay=0.05,
              warmup_ratio=0.1, seed=0, num_workers=0, teacher_steps=30, n_train=256, n_test=128, bf16=False),
    run=run_deit,
    notes="Paper scale assumes ImageNet-1k through `datasets` (the gated hub id ILSVRC/imagenet-1k, or set "
          "data=/path/to/folder for an `imagefolder` with train/ and validation/), and a transformers RegNetY-16GF "
          "teacher (facebook/regnet-y-160: the CNN family DeiT's best teacher came from; its image processor "
          "prepares the pixels both models see). batch_size is the global batch (fit gives each process its share): DeiT's 1024 "
          "(8 GPUs x 128), lr 5e-4 x 1024 / 512. DeiT's RandAugment, Mixup, CutMix, repeated augmentation and stochastic depth are not "
          "applied, so expect a few points under 74.5 (Ti) / 81.2 (S). student=small with dim=384 heads=6 for DeiT-S.",
)


# ---------------------------------------------------- ch 8: ALBERT and MiniViT
def tiny_text_teacher(cfg: dict, tokenizer, batches):
    """A 2-layer, 32-wide BERT classifier, trained here for a few steps (the
    smoke stand-in for the fine-tuned BERT-base teacher)."""
    from transformers import AutoModelForSequenceClassification
    config = zoo.architecture_config("minilm_l6", num_hidden_layers=2, hidden_size=32, num_attention_heads=2,
                                     intermediate_size=64, vocab_size=tokenizer.vocab_size, num_labels=2)
    set_seed(cfg["seed"])
    teacher = AutoModelForSequenceClassification.from_config(config)
    _fit(teacher, batches, {**cfg, "max_steps": cfg["teacher_steps"]}, lr=1e-3)
    return teacher.eval()


def run_albert(cfg: dict, out: Path) -> dict:
    """ALBERT's two ideas on a BERT teacher: every layer shares one set of
    weights, and the word table is factorized V x E + E x H; the student
    (initialised from the teacher: shared layers = their mean, embeddings =
    truncated SVD) learns the task from the teacher's logits and the labels."""
    rec = Recorder("08_sharing", out=out, name="albert")
    reviews = data.load_text_classification(cfg["task"])
    tokenizer = zoo.load_tokenizer(cfg["teacher"]) if cfg["teacher"] != "tiny" else zoo.load_tokenizer("minilm-l6")
    cut = lambda split, n: split if not n else TextSplit(split.texts[:n], split.labels[:n])
    train_split, test_split = cut(reviews.train, cfg["n_train"]), cut(reviews.split(cfg["eval_split"]), cfg["n_test"])
    batches = lambda: data.text_batches(train_split, tokenizer, batch_size=cfg["batch_size"], shuffle=True,
                                        seed=cfg["seed"], max_length=cfg["max_length"])
    test = data.text_batches(test_split, tokenizer, batch_size=128, max_length=cfg["max_length"])
    if cfg["teacher"] == "tiny":
        teacher = tiny_text_teacher(cfg, tokenizer, batches())
    else:  # fine-tuned once on the task and cached (zoo), like every chapter's teacher
        teacher = zoo.fine_tuned_teacher(cfg["task"], cfg["teacher"])[0]
    teacher = teacher.to(_device()).eval()
    rec.record("teacher.accuracy", train.evaluate(teacher, test)["accuracy"], unit="fraction", note=cfg["teacher"])

    student = share.shared_student(teacher, cfg["sharing"], groups=cfg["groups"], init="mean",
                                   embedding_size=cfg["embedding_size"])
    matches, hard = distill.kd_matches(alpha=cfg["alpha"])
    loss = distill.DistillationLoss(teacher, student, matches, temperature=cfg["temperature"], hard_weight=hard)
    result = _fit(student, batches(), cfg, loss=loss, weight_decay=0.01)

    acc = train.evaluate(student, test)["accuracy"]
    rec.record("albert.student.accuracy", acc, unit="fraction", paper=0.903 if cfg["task"] == "sst2" else None,
               source="ALBERT-base v1, SST-2 dev (pre-trained, not distilled)",
               note=f"{cfg['sharing']} shared, E={cfg['embedding_size']}, KD from {cfg['teacher']}, {result.steps} steps")
    rec.model("albert_student", accuracy=acc, params=bench.count_params(student),
              unique_params=bench.count_params(student), method="ALBERT sharing + factorized embeddings, KD")
    rec.record("albert.teacher.encoder_params", share.encoder_params(teacher), unit="params")
    rec.record("albert.student.encoder_params", share.encoder_params(student), unit="params",
               note="shared layers counted once")
    rec.record("train.steps", result.steps, unit="count")
    return saved(rec)


ALBERT = Recipe(
    name="albert", chapter="08_sharing",
    help="ALBERT: all layers shared, factorized embeddings, distilled from a fine-tuned BERT",
    paper=dict(task="sst2", eval_split="dev", teacher="bert-base-uncased", sharing="all", groups=1,
               embedding_size=128, alpha=0.5, temperature=2.0, epochs=3, max_steps=None, batch_size=32, lr=2e-5,
               max_length=128, seed=0, teacher_steps=0, n_train=None, n_test=None, bf16="auto"),
    tiny=dict(task="movie_reviews", eval_split="test", teacher="tiny", sharing="all", groups=1, embedding_size=16,
              alpha=0.5, temperature=2.0, epochs=1, max_steps=20, batch_size=16, lr=1e-3, max_length=32, seed=0,
              teacher_steps=30, n_train=128, n_test=64, bf16=False),
    run=run_albert,
    notes="Paper scale assumes the hub: bert-base-uncased fine-tuned once on GLUE SST-2 (zoo.fine_tuned_teacher, "
          "cached) and SST-2 through `datasets`; the student is ALBERT-base's shape (E = 128, all 12 layers "
          "shared, 12M parameters). ALBERT itself is pre-trained with MLM + SOP on BookCorpus and Wikipedia and "
          "then fine-tuned (SST-2 90.3 / 92.9 for v1 / v2); this recipe distils the shared student on the task "
          "instead, the chapter's method, so expect it below ALBERT's number. One GPU suffices (about an hour).",
)


def run_minivit(cfg: dict, out: Path) -> dict:
    """MiniViT: a ViT's blocks shared ``repeats`` layers at a time, each layer
    keeping its LayerNorms and getting a 1x1 head-mixing transformation;
    initialised from a trained ViT and trained with logit distillation."""
    rec = Recorder("08_sharing", out=out, name="minivit")
    processor = cfg["backbone"] if cfg["backbone"] != "train" else None
    task = image_task(cfg, processor_id=processor)
    backbone = vit_backbone(cfg, task)
    test = task["test"]
    teacher = image_teacher(cfg, task) if cfg["teacher"] != "backbone" else backbone
    config = share.MiniViTConfig.from_vit(backbone.config, repeats=cfg["repeats"],
                                          attention_transform=cfg["attention_transform"],
                                          mlp_transform=cfg["mlp_transform"])
    student = share.MiniViT.from_vit(backbone, config, init="mean")
    loss = share.minivit_loss(logit_teacher=teacher, alpha=cfg["alpha"], tau=cfg["tau"])
    result = _fit(student, task["train"](cfg["seed"]), cfg, loss=loss)

    base_acc, acc = (train.evaluate(m, test)["accuracy"] for m in (backbone, student))
    rec.record("minivit.backbone.accuracy", base_acc, unit="fraction", note=cfg["backbone"])
    rec.record("minivit.student.accuracy", acc, unit="fraction", paper=0.730 if cfg["backbone"].endswith("tiny-patch16-224") else None,
               source="Mini-DeiT-Ti, ImageNet top-1", note=f"repeats={cfg['repeats']}, {result.steps} steps")
    for name, model in (("backbone", backbone), ("student", student)):
        rec.record(f"minivit.{name}.params", bench.count_params(model), unit="params", note="tied tensors once")
    rec.model("minivit_student", accuracy=acc, params=bench.count_params(student),
              unique_params=bench.count_params(student), method="MiniViT weight multiplexing + KD")
    rec.record("train.steps", result.steps, unit="count")
    return saved(rec)


MINIVIT = Recipe(
    name="minivit", chapter="08_sharing",
    help="MiniViT: weight multiplexing on a pretrained DeiT, logit distillation",
    paper=dict(data="ILSVRC/imagenet-1k", backbone="facebook/deit-tiny-patch16-224", teacher="facebook/regnet-y-160",
               repeats=2, attention_transform=True, mlp_transform=False, alpha=0.5, tau=1.0, epochs=300,
               max_steps=None, batch_size=1024, lr=1e-3, weight_decay=0.05, warmup_ratio=5 / 300, seed=0,
               num_workers=8, backbone_steps=0, teacher_steps=0, n_train=None, n_test=None,
               dim=192, depth=12, heads=3, mlp_ratio=4.0, patch_size=16, bf16="auto"),
    tiny=dict(data="digits", backbone="train", teacher="cnn", repeats=2, attention_transform=True,
              mlp_transform=False, alpha=0.5, tau=1.0, epochs=1, max_steps=20, batch_size=32, lr=3e-3,
              weight_decay=0.05, warmup_ratio=0.1, seed=0, num_workers=0, backbone_steps=30, teacher_steps=6,
              n_train=256, n_test=128, dim=32, depth=4, heads=2, mlp_ratio=2.0, patch_size=2, bf16=False),
    run=run_minivit,
    notes="Paper scale assumes the hub: facebook/deit-tiny-patch16-224 as the weights to multiplex (converted "
          "with models.from_transformers; its image processor prepares the pixels), the RegNetY-16GF teacher "
          "facebook/regnet-y-160 (teacher=backbone distils from the DeiT itself), and ImageNet-1k through "
          "`datasets` (hub id or an imagefolder path). Mini-DeiT-Ti reaches 73.0% with 3M parameters in 300 "
          "epochs on 8 GPUs; Mini-DeiT's MLP has no transformation (mlp_transform=False). The dim/depth/heads "
          "keys only shape a ViT trained here (backbone=train).",
)


# ------------------------------------------------- ch 9: token sparsification
def run_dynamicvit(cfg: dict, out: Path) -> dict:
    """DynamicViT: prediction modules after a quarter, half and three quarters
    of the depth learn which patch tokens to drop (keep rho, rho^2, rho^3),
    fine-tuned with the unpruned backbone as teacher. EViT and ToMe, which
    need no training, are measured on the same backbone."""
    rec = Recorder("09_token_sparsification", out=out, name="dynamicvit")
    task = image_task(cfg, processor_id=cfg["backbone"] if cfg["backbone"] != "train" else None)
    backbone = vit_backbone(cfg, task).eval()
    test, one = task["test"], one_image(task)
    base_flops = bench.flops(backbone, one)
    rec.record("backbone.accuracy", train.evaluate(backbone, test)["accuracy"], unit="fraction", paper=0.798,
               source="DeiT-S, ImageNet top-1", note=cfg["backbone"])
    rec.record("backbone.gflops", base_flops / 1e9, unit="", paper=4.6, source="DynamicViT Table 1 (DeiT-S)")

    rho = cfg["rho"]
    set_seed(cfg["seed"])   # the prediction modules' initial weights
    model = sparsify.DynamicViT(copy.deepcopy(backbone), rho=rho)
    lr = cfg["lr"]
    # The predictors start from scratch: a larger learning rate than the backbone's (as the chapter).
    optimizer = torch.optim.AdamW([{"params": model.predictors.parameters(), "lr": cfg["predictor_lr_scale"] * lr},
                                   {"params": model.backbone.parameters(), "lr": lr}], weight_decay=0.05)
    loss = sparsify.dynamicvit_loss(backbone, sparsify.keep_schedule(rho))
    result = _fit(model.to(_device()), task["train"](cfg["seed"]), cfg, loss=loss, optimizer=optimizer)
    model.eval()
    acc, flops = train.evaluate(model, test)["accuracy"], bench.flops(model, one)
    c = backbone.config
    tokens = sparsify.dynamicvit_tokens(c.num_patches, c.depth, rho, extra=c.num_extra_tokens)
    rec.record(f"dynamicvit.rho{rho}.accuracy", acc, unit="fraction", paper=0.793 if rho == 0.7 else None,
               source="DynamicViT/DeiT-S rho=0.7, ImageNet top-1", note=f"{result.steps} steps")
    rec.record(f"dynamicvit.rho{rho}.gflops", flops / 1e9, unit="", paper=2.9 if rho == 0.7 else None,
               source="DynamicViT Table 1 (DeiT-S, rho=0.7)")
    rec.record(f"dynamicvit.rho{rho}.flops_ratio", flops / base_flops, unit="ratio", paper=2.9 / 4.6)
    rec.record(f"dynamicvit.rho{rho}.tokens_per_block", tokens, unit="count", note="class token included")
    rec.model(f"dynamicvit_rho{int(round(100 * rho))}", accuracy=acc, params=bench.count_params(model),
              unique_params=bench.count_params(model), method="DynamicViT", flops=flops)

    # Training-free alternatives on the unpruned backbone: only a forward pass each.
    free = {"evit": lambda: sparsify.EViT(backbone, keep_rate=rho),
            "tome": lambda: sparsify.ToMe(backbone, r=cfg["tome_r"])}
    for name in [n for n in cfg["training_free"].split(",") if n]:
        if name not in free:
            raise LightKDError(f"training_free names evit and/or tome, got {name!r}")
        m = free[name]().eval()
        knob = f"keep{rho}" if name == "evit" else f"r{cfg['tome_r']}"
        rec.record(f"{name}.{knob}.accuracy", train.evaluate(m, test)["accuracy"], unit="fraction",
                   paper={"evit": 0.795}.get(name) if rho == 0.7 else None, source="EViT/DeiT-S keep 0.7")
        rec.record(f"{name}.{knob}.flops_ratio", bench.flops(m, one) / base_flops, unit="ratio")
    rec.record("train.steps", result.steps, unit="count")
    return saved(rec)


DYNAMICVIT = Recipe(
    name="dynamicvit", chapter="09_token_sparsification",
    help="DynamicViT: learned token pruning (keep rho, rho^2, rho^3) on a DeiT; EViT / ToMe training-free",
    paper=dict(data="ILSVRC/imagenet-1k", backbone="facebook/deit-small-patch16-224", rho=0.7, epochs=30,
               max_steps=None, batch_size=768, lr=5e-4, predictor_lr_scale=10.0, weight_decay=0.05,
               warmup_ratio=0.0, seed=0, num_workers=8, training_free="evit,tome", tome_r=8, backbone_steps=0,
               n_train=None, n_test=None, dim=384, depth=12, heads=6, mlp_ratio=4.0, patch_size=16, bf16="auto"),
    tiny=dict(data="digits", backbone="train", rho=0.7, epochs=1, max_steps=20, batch_size=32, lr=1e-3,
              predictor_lr_scale=10.0, weight_decay=0.05, warmup_ratio=0.1, seed=0, num_workers=0,
              training_free="evit,tome", tome_r=2, backbone_steps=30, n_train=256, n_test=128, dim=32, depth=4,
              heads=2, mlp_ratio=2.0, patch_size=2, bf16=False),
    run=run_dynamicvit,
    notes="Paper scale assumes the hub: facebook/deit-small-patch16-224 (DeiT-S, 79.8%, 4.6 GFLOPs) converted with "
          "models.from_transformers, ImageNet-1k through `datasets` (hub id or imagefolder path), and 30 epochs on "
          "8 GPUs (batch_size is the global batch, 8 x 96). The learning rates are the chapter's choice (predictors at 10x), "
          "not verified against the official code. DynamicViT reports 79.3% at 2.9 GFLOPs for rho = 0.7; EViT 79.5% "
          "at keep 0.7 (it is fine-tuned there; here it runs training-free).",
)


# ------------------------------------------------- ch 10: vision-language
def cheap_tokens(images: torch.Tensor, side: int) -> torch.Tensor:
    """Visual tokens without a network, for the smoke run: the picture averaged
    down to 4*side pixels, cut into a side x side grid of patches (one token
    per patch, its pixels as features)."""
    small = torch.nn.functional.adaptive_avg_pool2d(images, 4 * side)
    return models.patchify(small, 4)


def vqa_tokens(cfg: dict, who: str, images: torch.Tensor, split: str) -> torch.Tensor:
    x = cfg[f"{who}_extractor"]
    if x == "pixels":
        return cheap_tokens(images, cfg[f"{who}_grid"])
    return vlm.pyramid_tokens(x, images, data=f"easyvqa-{split}-{len(images)}", image_size=cfg[f"{who}_image_size"],
                              grid=cfg[f"{who}_grid"])[0]


def run_vlm(cfg: dict, out: Path) -> dict:
    """DistilVLM on easy-VQA: a fusion teacher sees a fine grid of regions, the
    student a coarse one; visual token alignment runs the teacher on the
    student's regions (its features pooled to the student's grid) so that
    hidden states and attention can be matched token by token."""
    rec = Recorder("10_vision_language", out=out, name="vlm")
    vqa = data.load_vqa()
    tokenizer = zoo.load_tokenizer(cfg["bert"] if cfg["bert"] != "tiny" else "minilm-l6")
    n_img, n_q = cfg["n_images"], cfg["n_questions"]

    def questions(split):
        s = vqa.split(split)
        keep = [i for i in range(len(s)) if not n_img or int(s.image_index[i]) < n_img][:n_q or None]
        q = vlm.encode_questions(tokenizer, [s.questions[i] for i in keep])
        images = s.images[:n_img] if n_img else s.images
        return q, s.answers[keep], s.image_index[keep], images

    q_tr, y_tr, img_tr, pics_tr = questions("train")
    q_te, y_te, img_te, pics_te = questions("test")
    t_tr, t_te = vqa_tokens(cfg, "teacher", pics_tr, "train"), vqa_tokens(cfg, "teacher", pics_te, "test")
    s_tr, s_te = vqa_tokens(cfg, "student", pics_tr, "train"), vqa_tokens(cfg, "student", pics_te, "test")
    batches = lambda visual, q, y, img, targets=None, shuffle=True: vlm.VQABatches(
        visual, img, q["input_ids"], q["attention_mask"], y, batch_size=cfg["batch_size"], shuffle=shuffle,
        seed=cfg["seed"], targets=targets)

    if cfg["bert"] == "tiny":  # tiny random fusion models: the real training and distillation path, seconds
        make = lambda dim, layers: vlm.FusionVLM(dim, vqa.num_answers, vocab_size=tokenizer.vocab_size, hidden=32,
                                                 layers=layers, heads=2, intermediate=64, max_positions=64)
        set_seed(cfg["seed"])
        teacher, student = make(t_tr.shape[-1], cfg["teacher_layers"]), make(s_tr.shape[-1], cfg["student_layers"])
    else:  # the chapter's recipe: teacher = the pretrained BERT's layers, student = a few of them (MiniVLM)
        bert = zoo.load_pretrained(cfg["bert"]).eval()
        teacher = vlm.FusionVLM.from_bert(bert, t_tr.shape[-1], vqa.num_answers)
        student = vlm.minivlm_from_pretrained(bert, s_tr.shape[-1], vqa.num_answers, n_layers=cfg["student_layers"])
    _fit(teacher, batches(t_tr, q_tr, y_tr, img_tr), {**cfg, "max_steps": cfg["teacher_steps"]},
         loss=vlm.arm_loss("labels"), weight_decay=0.01)
    teacher.eval()
    t_acc = train.evaluate(teacher, batches(t_te, q_te, y_te, img_te, shuffle=False))["accuracy"]
    rec.record("teacher.accuracy", t_acc, unit="fraction", note=f"easy-VQA test, {cfg['teacher_extractor']} tokens")

    # Teacher targets in the student's token layout: aligned (teacher features of the student's regions) or not.
    layers = vlm.spread(len(teacher.layers), len(student.layers))
    visual = vlm.pool_tokens(t_tr, cfg["student_grid"]) if cfg["mode"] == "aligned" else t_tr
    with torch.no_grad():
        targets = vlm.teacher_targets(teacher, batches(visual, q_tr, y_tr, img_tr, shuffle=False),
                                      s_tr.shape[1], layers)
    weights = dict(kd=cfg["kd"], hidden=cfg["hidden"], attention=cfg["attention"])
    result = _fit(student, batches(s_tr, q_tr, y_tr, img_tr, targets=targets), cfg,
                  loss=vlm.arm_loss(cfg["mode"], **weights), weight_decay=0.01)
    s_acc = train.evaluate(student, batches(s_te, q_te, y_te, img_te, shuffle=False))["accuracy"]
    rec.record(f"distilvlm.{cfg['mode']}.accuracy", s_acc, unit="fraction",
               source="DistilVLM: VQA 69.8 (+0.8 over the non-distilled student)",
               note=f"easy-VQA test, {cfg['student_extractor']} tokens, {len(student.layers)} layers, {result.steps} steps")
    rec.record("distilvlm.retained", s_acc / max(t_acc, 1e-9), unit="ratio", paper=0.94,
               source="MiniVLM: keeps 94-97% of the teacher's accuracy")
    for name, model in (("teacher", teacher), ("student", student)):
        rec.record(f"{name}.params", bench.count_params(model), unit="params")
    rec.model("distilvlm_student", accuracy=s_acc, params=bench.count_params(student),
              unique_params=bench.count_params(student), method=f"DistilVLM ({cfg['mode']} tokens)")
    rec.record("train.steps", result.steps, unit="count")
    return saved(rec)


VLM = Recipe(
    name="vlm", chapter="10_vision_language",
    help="DistilVLM: aligned token-wise distillation of a small fusion VLM on easy-VQA",
    paper=dict(bert="minilm-l6", teacher_extractor="efficientnet_lite0", teacher_image_size=128, teacher_grid=4,
               student_extractor="mobilenet_v2", student_image_size=64, student_grid=2, student_layers=2,
               teacher_layers=6, mode="aligned", kd=1.0, hidden=1.0, attention=1.0, teacher_steps=3000,
               epochs=3, max_steps=None, batch_size=64, lr=1e-4, seed=0, n_images=None, n_questions=None, bf16="auto"),
    tiny=dict(bert="tiny", teacher_extractor="pixels", teacher_image_size=64, teacher_grid=4,
              student_extractor="pixels", student_image_size=64, student_grid=2, student_layers=1, teacher_layers=2,
              mode="aligned", kd=1.0, hidden=1.0, attention=1.0, teacher_steps=30, epochs=1, max_steps=20,
              batch_size=16, lr=1e-3, seed=0, n_images=32, n_questions=128, bf16=False),
    run=run_vlm,
    notes="The paper-scale run is the chapter's set-up at full budget, and it runs offline: easy-VQA (all 34,776 "
          "training questions), pyramid tokens from ImageNet EfficientNet-Lite0 (teacher, 4 x 4 regions) and "
          "MobileNetV2 (student, 2 x 2), a MiniLM-L6 fusion teacher and a 2-layer MiniVLM student (bert=bert-base-"
          "uncased with the hub). DistilVLM's own scale (OSCAR-B teacher on VinVL detector regions, COCO captions "
          "and VQA v2, CIDEr 120.8 / VQA 69.8) needs a region detector and pre-extracted region features, which "
          "lightkd does not provide: pass them as the visual tokens and the boxes of the student's regions.",
)

RECIPES = [DEIT, ALBERT, MINIVIT, DYNAMICVIT, VLM]
