"""Recipes for the text chapters not yet migrated to their own module (1-3, 5, 6, 11).

At the paper's scale a recipe takes BERT-base models from the hub and GLUE
SST-2 through ``datasets`` (``data.load_text_classification("sst2")``: dev
held out of GLUE's train split, test = GLUE's validation split, the "dev"
numbers papers report). With ``--tiny`` it builds a tiny random BERT (4
layers, width 32) on the offline tokenizer, takes a few hundred of lightkd's
movie reviews and trains a handful of steps: seconds on one CPU thread, no
network. Each recipe reads top to bottom: teacher, the chapter's method with
lightkd's own pieces, measurements, a ``Recorder`` writing ``out/<name>.json``.

The teacher the later recipes start from is ``teacher``: a hub id or local
folder of a classifier fine-tuned on the task (the ``teacher`` recipe saves
one under ``out/teacher``), or ``"tiny"``: a tiny BERT fine-tuned here for a
few steps, once per process.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import torch

from .. import bench, blocks, data, distill, mobilebert as mb, prune, quant, tinybert, train, zoo
from ..common import SourceMissing, set_seed
from ..results import Recorder
from .base import Recipe, device, is_main_process, saved

SST2_TEACHER = "textattack/bert-base-uncased-SST-2"  # BERT-base fine-tuned on SST-2, on the hub
TINY_BERT = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64,
                 max_position_embeddings=64)

# The data options every text recipe takes. None: all of it.
PAPER_DATA = {"task": "sst2", "train_size": None, "eval_size": None, "max_length": 128, "batch_size": 32,
              "seed": 0}
TINY_DATA = {"task": "movie_reviews", "train_size": 256, "eval_size": 128, "max_length": 32, "batch_size": 16,
             "seed": 0}


# ------------------------------------------------------------ shared pieces
def from_hub(loader, name: str, **kwargs):
    """``loader.from_pretrained(name)`` (a hub id, a cached one, or a folder), with
    one message instead of a traceback when it is not there."""
    try:
        return loader.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as e:  # ValueError: transformers' word for a name that is no hub id (a/b/c)
        raise SourceMissing(f"could not load {name!r} ({str(e).splitlines()[0]}); it needs the Hugging Face hub "
                            "or a local copy (a folder such as the teacher recipe's OUT/teacher)") from None


def tokenizer_for(name: str):
    if name == "tiny":  # the offline MiniLM tokenizer; the tiny model itself is random
        return zoo.load_tokenizer("minilm-l6")
    from transformers import AutoTokenizer
    return from_hub(AutoTokenizer, name)


def classifier(name: str, num_labels: int, seed: int):
    """A sequence classifier: a hub id or folder, or "tiny" (random weights).
    Eager attention: the distillation recipes read attention probabilities."""
    set_seed(seed)
    if name == "tiny":
        from transformers import BertConfig, BertForSequenceClassification
        config = BertConfig(vocab_size=tokenizer_for("tiny").vocab_size, num_labels=num_labels,
                            attn_implementation="eager", **TINY_BERT)
        return BertForSequenceClassification(config)
    from transformers import AutoModelForSequenceClassification
    return from_hub(AutoModelForSequenceClassification, name, num_labels=num_labels, attn_implementation="eager")


def text_data(cfg: dict, tokenizer):
    """The task's splits (cut to ``train_size`` / ``eval_size``) and their batches."""
    ds = data.load_text_classification(cfg["task"])
    cut = lambda split, n: split if n is None else data.TextSplit(split.texts[:n], split.labels[:n])
    batches = lambda split, shuffle: data.text_batches(split, tokenizer, batch_size=cfg["batch_size"],
                                                       max_length=cfg["max_length"], shuffle=shuffle,
                                                       seed=cfg["seed"])
    train_split = cut(ds.train, cfg["train_size"])
    return SimpleNamespace(num_labels=ds.num_labels, train_split=train_split, train=batches(train_split, True),
                           dev=batches(cut(ds.dev, cfg["eval_size"]), False),
                           test=batches(cut(ds.test, cfg["eval_size"]), False))


def steps_of(cfg: dict, batches, epochs_key: str = "epochs", steps_key: str = "max_steps") -> int:
    """A stage's length: ``max_steps`` when set (the tiny runs), else epochs over the batches."""
    return cfg[steps_key] or max(1, round(cfg[epochs_key] * len(batches)))


def accuracy(model, batches) -> float:
    return train.evaluate(model, batches)["accuracy"]


_TINY_TEACHERS: dict = {}


def teacher_for(cfg: dict):
    """(teacher, tokenizer, data) for a recipe: the fine-tuned ``cfg["teacher"]``,
    or a tiny BERT fine-tuned with the ``teacher`` recipe's tiny options (trained
    once per process and data options: ``all --tiny`` pays for it once)."""
    tok = tokenizer_for(cfg["teacher"])
    d = text_data(cfg, tok)
    if cfg["teacher"] != "tiny":
        model = classifier(cfg["teacher"], d.num_labels, cfg["seed"])
    else:
        options = {**TEACHER_TINY, **{k: cfg[k] for k in TINY_DATA}}
        key = json.dumps(options, sort_keys=True)
        if key not in _TINY_TEACHERS:
            _TINY_TEACHERS[key] = fine_tune(classifier("tiny", d.num_labels, cfg["seed"]), d, options)
        model = copy.deepcopy(_TINY_TEACHERS[key])
    return model.eval().to(device()), tok, d


def fine_tune(model, d, cfg: dict):
    """Plain fine-tuning on the labels (the teacher's recipe)."""
    train.fit(model, d.train, d.dev, epochs=cfg["epochs"], max_steps=cfg["max_steps"], lr=cfg["lr"],
              warmup_ratio=cfg["warmup_ratio"], seed=cfg["seed"])
    return model.eval()


def kd_distil(teacher, student, d, cfg: dict, steps: int):
    """Chapter 4's task distillation: KD on the logits (temperature T, weight
    alpha, labels 1 - alpha) plus DistilBERT's cosine term on the last hidden state."""
    if cfg["freeze_embeddings"]:  # the word table is most of a small student; ch. 4 freezes it on a CPU
        student.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    matches, hard = distill.kd_matches(cfg["alpha"], cosine_weight=cfg["cosine"])
    loss = distill.DistillationLoss(teacher, student, matches, temperature=cfg["temperature"], hard_weight=hard)
    return train.fit(student, d.train, None, max_steps=steps, lr=cfg["lr"], loss=loss, seed=cfg["seed"])


def export_int8(model, batches, out: Path, stem: str) -> bench.OnnxRunner:
    """ONNX export, then ONNX Runtime's dynamic int8 quantization (CPU deployment)."""
    model = model.cpu().eval()
    example = next(iter(batches))
    fp32 = bench.export_onnx(model, out / f"{stem}.onnx", example)
    return bench.OnnxRunner(bench.onnx_quantize_dynamic(fp32, out / f"{stem}-int8.onnx"),
                            num_threads=torch.get_num_threads())


def recorder(recipe: str, chapter: str, out: Path) -> Recorder:
    return Recorder(chapter, out=out, name=recipe)


def where(cfg: dict, what: str = "") -> str:
    """The note on every number: what was run, so a tiny number is never read as the paper's."""
    model = cfg.get("teacher", cfg.get("model"))
    model = "a tiny random BERT (4 x 32)" if model == "tiny" else model
    n = "all" if cfg["train_size"] is None else cfg["train_size"]
    return f"{what}{model}, {cfg['task']} ({n} training sentences), test split"


# ------------------------------------------------------------ 1. the teacher
def run_teacher(cfg: dict, out: Path) -> dict:
    rec = recorder("teacher", "01_teacher", out)
    tok = tokenizer_for(cfg["model"])
    d = text_data(cfg, tok)
    model = fine_tune(classifier(cfg["model"], d.num_labels, cfg["seed"]), d, cfg)
    acc = accuracy(model, d.test)
    rec.model("teacher", accuracy=acc, params=bench.count_params(model), size_bytes=bench.size_on_disk(model),
              method="fine-tuned teacher", note=where(cfg))
    rec.record("teacher.accuracy", acc, unit="fraction", paper=0.927, source="BERT-base, SST-2 dev (DistilBERT, table 1)",
               note=where(cfg))
    if cfg["save"] and is_main_process():  # the later recipes' --set teacher=<out>/teacher
        model.save_pretrained(out / "teacher")
        tok.save_pretrained(out / "teacher")
    return saved(rec)


TEACHER_TINY = {"model": "tiny", **TINY_DATA, "epochs": 1, "max_steps": 24, "lr": 1e-3, "warmup_ratio": 0.1,
                "save": False}
TEACHER = Recipe(
    "teacher", "01_teacher", "fine-tune a BERT teacher on SST-2 (bert-base-uncased, 3 epochs)",
    paper={"model": "bert-base-uncased", **PAPER_DATA, "epochs": 3, "max_steps": None, "lr": 2e-5,
           "warmup_ratio": 0.1, "save": True},
    tiny=TEACHER_TINY,
    run=run_teacher,
    notes="one GPU, about 20 minutes for bert-base-uncased on SST-2; saves the model under OUT/teacher")


# ------------------------------------------------------------ 2. quantization
def run_quantize(cfg: dict, out: Path) -> dict:
    rec = recorder("quantize", "02_quantization", out)
    teacher, tok, d = teacher_for(cfg)
    teacher = teacher.cpu()  # int8 kernels are CPU deployment paths
    fp32 = accuracy(teacher, d.test)
    int8 = quant.quantize_dynamic_int8(teacher)
    onnx8 = export_int8(teacher, d.test, out, "quantize")
    sizes = {"fp32": bench.size_on_disk(teacher), "int8": bench.size_on_disk(int8), "onnx": onnx8.size_on_disk()}
    accs = {"fp32": fp32, "int8": accuracy(int8, d.test), "onnx": accuracy(onnx8, d.test)}
    for key, method in (("fp32", "fp32 teacher"), ("int8", f"dynamic int8 ({int8.lightkd_backend})"),
                        ("onnx", "ONNX Runtime dynamic int8")):
        rec.model(f"quantize_{key}", accuracy=accs[key], size_bytes=sizes[key], method=method, note=where(cfg))
    rec.record("int8_dynamic.accuracy", accs["int8"], unit="fraction", paper=0.9224,
               source="Q8BERT, SST-2 dev (8-bit QAT)", note=where(cfg, "dynamic int8 without QAT; "))
    rec.record("int8_dynamic.drop", 100 * (fp32 - accs["int8"]), unit="points", note=where(cfg))
    rec.record("onnx_int8.accuracy", accs["onnx"], unit="fraction", note=where(cfg))
    rec.record("int8_dynamic.size_ratio", sizes["fp32"] / sizes["int8"], unit="x", paper=4.0,
               source="Q8BERT: int8 weights are 4x smaller", note="whole state dict, embeddings included")
    rec.record("onnx_int8.size_ratio", sizes["fp32"] / sizes["onnx"], unit="x", paper=4.0,
               source="Q8BERT: int8 weights are 4x smaller", note="ONNX file vs fp32 state dict")
    return saved(rec)


QUANTIZE = Recipe(
    "quantize", "02_quantization", "dynamic int8 and ONNX Runtime int8 of a fine-tuned teacher: accuracy and size",
    paper={"teacher": SST2_TEACHER, **PAPER_DATA},
    tiny={"teacher": "tiny", **TINY_DATA},
    run=run_quantize,
    notes="no training; CPU is the point (int8 kernels). Writes OUT/quantize.onnx and OUT/quantize-int8.onnx")


# ------------------------------------------------------------ 3. pruning
def run_prune(cfg: dict, out: Path) -> dict:
    rec = recorder("prune", "03_pruning", out)
    teacher, tok, d = teacher_for(cfg)
    dense = accuracy(teacher, d.test)
    steps = steps_of(cfg, d.train)

    # Gradual magnitude pruning (Zhu and Gupta): prune a little, train a little, up to the final sparsity.
    sparse = copy.deepcopy(teacher)
    prune.fine_tune_gradual(sparse, d.train, final=cfg["sparsity"], steps=steps, lr=cfg["lr"], seed=cfg["seed"])
    sparsity = prune.sparsity_of(prune.masks_from_zeros(sparse))
    sparse_acc = accuracy(sparse, d.test)

    # Heads by Michel et al.'s importance on the dev split, removed for real, then fine-tuned to recover.
    headless = copy.deepcopy(teacher)
    importance = prune.head_importance(headless, d.dev, max_batches=cfg["importance_batches"])
    removed = prune.heads_to_remove(importance, cfg["head_fraction"])
    prune.remove_heads(headless, removed)
    before = accuracy(headless, d.test)
    train.fit(headless, d.train, None, max_steps=steps, lr=cfg["lr"], seed=cfg["seed"])
    after = accuracy(headless, d.test)

    rec.model("prune_dense", accuracy=dense, params=bench.count_params(teacher), method="dense teacher",
              note=where(cfg))
    rec.model("prune_gradual", accuracy=sparse_acc, params=bench.count_params(sparse), method="gradual magnitude",
              note=where(cfg, f"{sparsity:.0%} of the encoder's weights zero; "))
    rec.model("prune_heads", accuracy=after, params=bench.count_params(headless), method="heads removed + fine-tune",
              note=where(cfg, f"{sum(map(len, removed.values()))} heads removed; "))
    rec.record("gradual.sparsity", sparsity, unit="fraction", paper=0.6,
               source="Chen et al. 2020: matching subnetwork of BERT-base on SST-2 at 60% sparsity")
    rec.record("gradual.drop", 100 * (dense - sparse_acc), unit="points", note=where(cfg))
    rec.record("heads.removed_fraction", cfg["head_fraction"], unit="fraction")
    rec.record("heads.drop_before_fine_tuning", 100 * (dense - before), unit="points", note=where(cfg))
    rec.record("heads.drop", 100 * (dense - after), unit="points", note=where(cfg))
    return saved(rec)


PRUNE = Recipe(
    "prune", "03_pruning", "gradual magnitude pruning to 60%, and head removal by importance, with fine-tuning",
    paper={"teacher": SST2_TEACHER, **PAPER_DATA, "sparsity": 0.6, "head_fraction": 0.4, "importance_batches": None,
           "epochs": 3, "max_steps": None, "lr": 2e-5},
    tiny={"teacher": "tiny", **TINY_DATA, "sparsity": 0.6, "head_fraction": 0.25, "importance_batches": 2,
          "epochs": 1, "max_steps": 10, "lr": 1e-3},
    run=run_prune,
    notes="one GPU, about an hour (two fine-tuning runs of 3 epochs on SST-2); zeros save time only on a sparse "
          "runtime")


# ------------------------------------------------------------ 5. TinyBERT
def tinybert_student(teacher, cfg: dict):
    """The student and its W_h: the released General TinyBERT (the paper's starting
    point for task distillation), or a fresh one of the configured shape."""
    if cfg["student"]:
        from transformers import AutoModelForSequenceClassification
        student = from_hub(AutoModelForSequenceClassification, cfg["student"],
                           num_labels=teacher.config.num_labels, attn_implementation="eager")
        w_h = tinybert.make_projection(student.config.hidden_size, teacher.config.hidden_size)
        return torch.nn.ModuleDict({"student": student, "w_h": w_h})
    config = tinybert.student_config(teacher, cfg["layers"], cfg["hidden"], intermediate=cfg["intermediate"])
    return tinybert.make_student(teacher, config, seed=cfg["seed"], init=cfg["init"])


def run_tinybert(cfg: dict, out: Path) -> dict:
    rec = recorder("tinybert", "05_tinybert", out)
    teacher, tok, d = teacher_for(cfg)
    bundle = tinybert_student(teacher, cfg).to(device())
    g = tinybert.layer_map("uniform", teacher.config.num_hidden_layers, bundle["student"].config.num_hidden_layers)
    batch = lambda split: data.text_batches(split, tok, batch_size=cfg["batch_size"], max_length=cfg["max_length"],
                                            shuffle=True, seed=cfg["seed"])
    if cfg["general_steps"]:  # general distillation: attention + hidden states on unlabelled text
        corpus = data.load_unlabelled_text(cfg["corpus"], max_sentences=cfg["corpus_size"])
        tinybert.fit_stage(bundle, teacher, batch(data.TextSplit(corpus, [0] * len(corpus))), g, "general",
                           steps=cfg["general_steps"], lr=cfg["lr"], seed=cfg["seed"])
    split = d.train_split
    if cfg["augment"]:  # the paper's data augmentation: GloVe neighbours, p = 0.4, K = 15, N copies
        split, _ = tinybert.augmented_split(split, tok, p=0.4, k=15, copies=cfg["copies"], seed=cfg["seed"])
    batches = batch(split)
    tinybert.task_distillation(bundle, teacher, batches, g,
                               intermediate_steps=steps_of(cfg, batches, "intermediate_epochs"),
                               prediction_steps=steps_of(cfg, batches, "prediction_epochs"),
                               lr=cfg["lr"], prediction_lr=cfg["prediction_lr"], seed=cfg["seed"])
    student = bundle["student"]
    t_acc, s_acc = accuracy(teacher, d.test), accuracy(student, d.test)
    t_params, s_params = bench.count_params(teacher), bench.count_params(student)
    rec.model("tinybert_teacher", accuracy=t_acc, params=t_params, method="teacher", note=where(cfg))
    rec.model("tinybert_student", accuracy=s_acc, params=s_params, method="TinyBERT task distillation",
              note=where(cfg))
    rec.record("student.accuracy", s_acc, unit="fraction", paper=0.926, source="TinyBERT4, SST-2 (GLUE test)",
               note=where(cfg))
    rec.record("student.retained", s_acc / t_acc if t_acc else 0.0, unit="ratio", paper=0.968,
               source="TinyBERT4: 96.8% of the teacher", note=where(cfg))
    rec.record("student.params_ratio", t_params / s_params, unit="x", paper=7.5, source="TinyBERT4 vs BERT-base")
    return saved(rec)


TINYBERT = Recipe(
    "tinybert", "05_tinybert", "TinyBERT task distillation: intermediate layers, then the prediction layer",
    paper={"teacher": SST2_TEACHER, **PAPER_DATA, "max_length": 64, "student": "huawei-noah/TinyBERT_General_4L_312D",
           "layers": 4, "hidden": 312, "intermediate": 1200, "init": "random", "general_steps": 0,
           "corpus": "wikitext", "corpus_size": None, "augment": True, "copies": 20, "intermediate_epochs": 10,
           "prediction_epochs": 3, "max_steps": None, "lr": 5e-5, "prediction_lr": 3e-5},
    tiny={"teacher": "tiny", **TINY_DATA, "student": "", "layers": 2, "hidden": 16, "intermediate": 32,
          "init": "pca", "general_steps": 0, "corpus": "snippets", "corpus_size": 256, "augment": False, "copies": 2,
          "intermediate_epochs": 1, "prediction_epochs": 1, "max_steps": 6, "lr": 1e-3, "prediction_lr": 1e-3},
    run=run_tinybert,
    notes="starts from the released General TinyBERT (set student='' and general_steps>0 to distil one); the "
          "augmented SST-2 has about 1.3M sentences: 10 epochs of it take days on one GPU")


# ------------------------------------------------------------ 6. MobileBERT
def run_mobilebert(cfg: dict, out: Path) -> dict:
    rec = recorder("mobilebert", "06_mobilebert", out)
    teacher, tok, d = teacher_for(cfg)
    student = mb.MobileBert(mb.student_config(teacher.config, intra_ratio=cfg["intra_ratio"]))
    mb.init_from_teacher(student, teacher)
    student.to(device())
    # Stage 1: progressive layer-wise transfer (feature maps and attentions, one block at a time).
    mb.layerwise_transfer(student, teacher, d.train, cfg["strategy"],
                          steps_of(cfg, d.train, "transfer_epochs", "transfer_steps"), lr=cfg["transfer_lr"],
                          seed=cfg["seed"])
    # Stage 2: task distillation (soft targets and labels).
    mb.task_distill(student, teacher, d.train, d.dev, steps_of(cfg, d.train), lr=cfg["lr"], seed=cfg["seed"])
    t_acc, s_acc = accuracy(teacher, d.test), accuracy(student, d.test)
    ratio = mb.encoder_params(teacher) / mb.encoder_params(student)
    rec.model("mobilebert_teacher", accuracy=t_acc, params=bench.count_params(teacher), method="teacher",
              note=where(cfg))
    rec.model("mobilebert_student", accuracy=s_acc, params=bench.count_params(student),
              method=f"MobileBERT-shaped student, {cfg['strategy']} transfer", note=where(cfg))
    rec.record("student.accuracy", s_acc, unit="fraction", paper=0.928, source="MobileBERT, SST-2",
               note=where(cfg, "BERT teacher of the same depth, not the paper's IB-BERT-large; "))
    rec.record("student.encoder_params_ratio", ratio, unit="x", paper=4.3,
               source="MobileBERT: 4.3x smaller than BERT-base", note="encoder parameters, teacher / student")
    return saved(rec)


MOBILEBERT = Recipe(
    "mobilebert", "06_mobilebert", "a MobileBERT-shaped student: progressive layer-wise transfer, then task KD",
    paper={"teacher": SST2_TEACHER, **PAPER_DATA, "intra_ratio": 4, "strategy": "progressive",
           "transfer_epochs": 3, "transfer_steps": None, "transfer_lr": 1e-3, "epochs": 3, "max_steps": None,
           "lr": 1e-4},
    tiny={"teacher": "tiny", **TINY_DATA, "intra_ratio": 4, "strategy": "progressive", "transfer_epochs": 1,
          "transfer_steps": 8, "transfer_lr": 1e-3, "epochs": 1, "max_steps": 6, "lr": 1e-3},
    run=run_mobilebert,
    notes="a student of the teacher's depth with bottlenecks (12 x 768 / 192 for BERT-base), transferred on SST-2; "
          "the paper's IB-BERT-large teacher and pre-training corpus are not on the hub")


# ------------------------------------------------------------ 11. putting it together
def run_compound(cfg: dict, out: Path) -> dict:
    rec = recorder("compound", "11_putting_it_together", out)
    teacher, tok, d = teacher_for(cfg)
    steps = steps_of(cfg, d.train)
    stages = {"teacher": (teacher, "fine-tuned teacher")}

    n = teacher.config.num_hidden_layers
    student = blocks.student_from_teacher(teacher, blocks.spread_layers(n, cfg["student_layers"]))
    kd_distil(teacher, student, d, cfg, steps)
    stages["student"] = (copy.deepcopy(student), f"distilled, {cfg['student_layers']} layers")

    importance = prune.head_importance(student, d.dev, max_batches=cfg["importance_batches"])
    removed = prune.heads_to_remove(importance, cfg["head_fraction"])
    small = prune.remove_ffn_neurons(prune.remove_heads(student, removed), cfg["ffn_fraction"])
    stages["pruned"] = (copy.deepcopy(small), "+ heads and FFN neurons removed")

    kd_distil(teacher, small, d, cfg, max(1, round(cfg["recover_fraction"] * steps)))
    stages["recovered"] = (small, "+ recovery by distillation")

    if cfg["trim_vocabulary"]:  # keep the word pieces the task's training text uses
        small = prune.trim_vocabulary(small.cpu(), prune.vocabulary_of(d.train_split.texts, tok), tok.unk_token_id)
        stages["trimmed"] = (small, "+ vocabulary trimmed")
    stages["onnx_int8"] = (export_int8(small, d.test, out, "compound"), "+ ONNX Runtime int8")

    accs = {}
    for name, (model, method) in stages.items():
        accs[name] = accuracy(model, d.test)
        size = model.size_on_disk() if isinstance(model, bench.OnnxRunner) else bench.size_on_disk(model)
        params = None if isinstance(model, bench.OnnxRunner) else bench.count_params(model)
        rec.model(f"compound_{name}", accuracy=accs[name], params=params, size_bytes=size, method=method,
                  note=where(cfg))
    size = lambda name: rec[f"models.compound_{name}.size_bytes"]
    rec.record("compound.size_ratio", size("teacher") / size("onnx_int8"), unit="x",
               note="teacher's fp32 state dict / the deployed ONNX int8 file")
    rec.record("compound.drop", 100 * (accs["teacher"] - accs["onnx_int8"]), unit="points", note=where(cfg))
    return saved(rec)


COMPOUND = Recipe(
    "compound", "11_putting_it_together",
    "distil, remove heads and FFN neurons, recover, trim the vocabulary, ONNX int8",
    paper={"teacher": SST2_TEACHER, **PAPER_DATA, "student_layers": 6, "alpha": 0.5, "cosine": 1.0,
           "temperature": 2.0, "freeze_embeddings": False, "epochs": 3, "max_steps": None, "lr": 5e-5,
           "head_fraction": 1 / 3, "ffn_fraction": 0.5, "importance_batches": None, "recover_fraction": 1 / 3,
           "trim_vocabulary": True},
    tiny={"teacher": "tiny", **TINY_DATA, "student_layers": 2, "alpha": 0.5, "cosine": 1.0, "temperature": 2.0,
          "freeze_embeddings": True, "epochs": 1, "max_steps": 8, "lr": 1e-3, "head_fraction": 1 / 4,
          "ffn_fraction": 0.5, "importance_batches": 2, "recover_fraction": 0.5, "trim_vocabulary": True},
    run=run_compound,
    notes="one GPU for the distillation (about an hour for 3 epochs of SST-2), the CPU for the ONNX int8 model; "
          "writes OUT/compound.onnx and OUT/compound-int8.onnx")


RECIPES = [TEACHER, QUANTIZE, PRUNE, TINYBERT, MOBILEBERT, COMPOUND]
