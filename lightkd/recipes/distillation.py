"""Chapter 4, knowledge distillation: the chapter's one pipeline.

A DistilBERT-style student (every other layer of a fine-tuned teacher)
learns from labels, from the teacher's soft targets, or from both, and each
student trains until its dev accuracy stops improving. The notebook teaches
the pieces and calls these stages; ``python -m lightkd.recipes distilbert
--scale paper`` runs the same stages on BERT-base and GLUE SST-2.

    cfg = config()                        # the preset of LIGHTKD_SCALE (tiny, book, paper)
    env = setup(cfg)                      # teacher, tokenizer, splits, the teacher's test answers
    students = train_arms(cfg, env)       # {(arm, seed): student}, each cached on its config and code
    speed = measure(cfg, env, students)   # latency of teacher and student, round-robin
    verdicts = report(cfg, rec, env, students, speed)   # metrics, models and the claim ledger

The arms (``ARMS``) are data: which sentences a student sees, whether it
sees their labels, how much of the teacher it matches, how it starts.
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from .. import bench, blocks, data, distill, results, train, zoo
from ..common import LightKDError, SourceMissing
from ..scales import current as current_scale
from ..study import Change, Claim, Metric, Study, judge, record
from .base import Recipe, device, is_main_process, saved, stage_key

CHAPTER = "04_distillation"


# ------------------------------------------------------------------ the arms
@dataclass(frozen=True)
class Arm:
    """One way to train the student. ``sentences``: the whole training split
    ("train") or Hinton's labelled 3% of it ("labelled"); ``alpha``: the
    weight of the teacher's soft targets (labels get 1 - alpha; 1 means the
    student never sees a label); ``cosine``: DistilBERT's cosine loss on the
    last hidden state; ``init``: the teacher's layers or random weights."""
    label: str
    sentences: str = "train"
    alpha: float = 0.5
    cosine: float = 0.0
    init: str = "teacher"


ARMS = {
    "labels_3pct": Arm("labels only, 3% of the data", sentences="labelled", alpha=0.0),
    "kd_3pct": Arm("KD, 3% of the data", sentences="labelled", alpha=0.5),
    "labels": Arm("labels only", alpha=0.0),
    "kd": Arm("KD + cosine (DistilBERT)", alpha=0.5, cosine=1.0),
    "soft_only": Arm("soft targets only, no labels", alpha=1.0, cosine=1.0),
    "random_3pct": Arm("KD, 3% of the data, random layers", sentences="labelled", alpha=0.5, init="random"),
}


# ------------------------------------------------------------------ the config
@dataclass(frozen=True)
class Config:
    teacher: str = "minilm-l6"        # the book's fine-tuned MiniLM-L6, or a hub id / folder of a fine-tuned classifier
    task: str = "movie_reviews"       # or "sst2": GLUE SST-2 through datasets
    student_layers: int = 3           # every other layer of the teacher
    layers: tuple | None = None       # which teacher layers to copy (None: spread evenly, DistilBERT's choice)
    train_size: int | None = None     # training sentences (None: the whole split)
    dev_size: int | None = None       # dev sentences early stopping reads (None: all)
    test_size: int | None = None      # test sentences scored (None: all)
    max_length: int = 128
    batch_size: int = 32
    lr: float = 5e-5
    max_epochs: float = 10.0          # a ceiling: early stopping ends every run before it
    small_max_epochs: float = 40.0    # the same for the 3% runs (a tenth as many steps per epoch)
    evals_per_epoch: int = 2          # dev evaluations per epoch (at least every `min_eval_steps`)
    min_eval_steps: int = 20          # the 3% runs: an evaluation every 20 steps (2.5 epochs of 254 sentences)
    patience: int = 3                 # evaluations without a better dev accuracy before stopping
    temperature: float = 2.0
    labelled_fraction: float = 0.03   # Hinton's test: 3% of the training split, with labels
    freeze_embeddings: bool = True    # on a CPU, AdamW's update of the word table costs more than the forward pass
    cache_teacher: bool = True        # store the teacher's outputs on the training split once (off for BERT-base scale)
    arms: tuple = tuple(ARMS)
    seeds: int = 3                    # paired seeds per whole-split arm
    main_seeds: int = 5               # the KD + cosine student, which the 97% claim rests on alone
    small_seeds: int = 6              # per 3% arm: a tenth of the cost each, and random layers vary more by seed
    latency_rounds: int = 20

    def __post_init__(self):
        unknown = set(self.arms) - set(ARMS)
        if unknown or not self.arms:
            raise LightKDError(f"arms must name some of {', '.join(ARMS)}, got {self.arms!r}")
        for name in ("student_layers", "batch_size", "evals_per_epoch", "min_eval_steps", "patience", "seeds",
                     "main_seeds", "small_seeds", "latency_rounds", "max_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LightKDError(f"{name} must be a positive integer, got {value!r}")
        for name in ("train_size", "dev_size", "test_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 2):
                raise LightKDError(f"{name} must be an integer >= 2 or None (all of it), got {value!r}")
        for name in ("lr", "max_epochs", "small_max_epochs", "temperature", "labelled_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                raise LightKDError(f"{name} must be a positive number, got {value!r}")
        if self.layers is not None:
            if isinstance(self.layers, (str, bytes)) or not all(isinstance(l, int) and not isinstance(l, bool)
                                                                 for l in self.layers):
                raise LightKDError(f"layers must be teacher layer indices, e.g. (0, 2, 4), got {self.layers!r}")
            object.__setattr__(self, "layers", tuple(self.layers))
        if self.labelled_fraction > 1:
            raise LightKDError(f"labelled_fraction is a share of the training split, got {self.labelled_fraction!r}")


BOOK = Config()
TINY = Config(train_size=320, dev_size=96, test_size=160, max_length=64, lr=1e-4, max_epochs=3.0, small_max_epochs=10.0,
              labelled_fraction=0.1, evals_per_epoch=1, min_eval_steps=4, patience=2, seeds=1, main_seeds=1, small_seeds=1,
              latency_rounds=6,
              arms=("labels_3pct", "kd_3pct", "labels", "kd"))
PAPER = Config(teacher="textattack/bert-base-uncased-SST-2", task="sst2", student_layers=6, lr=5e-5, max_epochs=3.0,
               evals_per_epoch=4, freeze_embeddings=False, cache_teacher=False, arms=("labels", "kd"), seeds=1,
               main_seeds=1)


def config(scale: str | None = None, **changes) -> Config:
    """The preset of ``scale`` (default: ``LIGHTKD_SCALE``), with ``changes``."""
    return DISTILBERT.config(scale or current_scale(), **changes)


# ------------------------------------------------------------ what is measured
METRICS = {m.name: m for m in [
    Metric("teacher.accuracy", "fraction", paper=0.927, source="BERT-base, SST-2 dev (DistilBERT, Table 1)"),
    Metric("student.accuracy", "fraction", paper=0.913, source="DistilBERT, SST-2 dev (Table 1)",
           note="the KD + cosine student, mean over seeds"),
    Metric("student.retained", "fraction", paper=0.97, source="DistilBERT abstract: 97% of BERT's GLUE score",
           note="the KD + cosine student's accuracy / the teacher's"),
    Metric("student.params_ratio", "ratio", paper=66 / 110, source="DistilBERT: 66M parameters vs BERT-base's 110M",
           note="student / teacher parameters"),
    Metric("student.speedup", "x", paper=1.6, source="DistilBERT abstract: 60% faster",
           note="teacher / student time, batch 1, 128 tokens, median of per-round ratios"),
    Metric("teacher.latency_ms", "ms", note="batch 1, 128 tokens"),
    Metric("student.latency_ms", "ms", note="batch 1, 128 tokens"),
    Metric("teacher.params", "params", paper=110_000_000, source="BERT-base"),
    Metric("student.params", "params", paper=66_000_000, source="DistilBERT"),
    Metric("teacher.size", "bytes"),
    Metric("student.size", "bytes"),
]}

# ------------------------------------------------------------ what is claimed
# Declared before the book-scale run (2026-12-07). A change after results exist goes into `history`.
_SIX_SEEDS = "over six paired seeds"
CLAIMS = {c.id: c for c in [
    Claim("kd_beats_labels_3pct",
          statement="Trained on 3% of the labelled data, a student learns more from the teacher's soft targets "
                    "than from the labels alone",
          quote="Soft targets allow a new model to generalize well from only 3% of the training set.",
          source="Hinton, Vinyals and Dean 2015, Table 5 (speech: 57.0% vs 44.5% frame accuracy)",
          effect=f"KD minus labels only, both on the same 3% of the training sentences, test accuracy in points, "
                 f"{_SIX_SEEDS}",
          threshold=0.0, declared="2026-12-07",
          history=(Change("2026-12-08", "effect",
                          old="KD minus labels only, both on the same 3% of the training sentences, test accuracy "
                              "in points",
                          new=f"KD minus labels only, both on the same 3% of the training sentences, test accuracy "
                              f"in points, {_SIX_SEEDS}",
                          why="Declared with three seeds per arm. The 3% arms share their seeds, so this comparison "
                              "gets the six that layer_init_beats_random moved to (see its history); the claim and "
                              "its threshold are unchanged."),)),
    Claim("distilbert_keeps_97",
          statement="A student with half of the teacher's layers keeps 97% of its accuracy",
          quote="it is possible to reduce the size of a BERT model by 40%, while retaining 97% of its language "
                "understanding capabilities and being 60% faster",
          source="Sanh et al. 2019 (DistilBERT), abstract",
          effect="the KD + cosine student minus 97% of the teacher, per test sentence, in points, over five seeds",
          threshold=0.0, declared="2026-12-07",
          history=(Change("2026-12-08", "effect",
                          old="the KD + cosine student minus 97% of the teacher, per test sentence, in points",
                          new="the KD + cosine student minus 97% of the teacher, per test sentence, in points, over "
                              "five seeds",
                          why="Declared with three seeds. Run with LIGHTKD_SEED=2, the three KD + cosine students "
                              "scattered (83.0% to 85.1% against a teacher at 85.0%) and the interval read +1.57 "
                              "points [-0.44, +3.59], inconclusive (resolution), where seeds 0 and 1 read "
                              "reproduced. The chapter's headline claim rests on this one arm, so it trains five "
                              "seeds; the claim and its threshold are unchanged."),)),
    Claim("soft_targets_replace_labels",
          statement="A student that never sees a label, only the teacher's soft targets on the same sentences, "
                    "comes within one point of a student trained on the labels",
          quote="The transfer set that is used to train the small model could consist entirely of unlabeled data "
                "or we could use the original training set.",
          source="Hinton, Vinyals and Dean 2015, Section 2",
          effect="soft targets only (+ cosine) minus labels only, whole training split, in points",
          threshold=-1.0, declared="2026-12-07"),
    Claim("layer_init_beats_random",
          statement="Initialising the student from every other teacher layer beats random initialisation",
          quote="Taking advantage of the common dimensionality between teacher and student networks, we "
                "initialize the student from the teacher by taking one layer out of two.",
          source="Sanh et al. 2019 (DistilBERT), Section 3 and Table 4 (random initialisation: -3.69 GLUE points)",
          effect=f"KD on the labelled 3% from teacher layers minus the same from random layers, in points, "
                 f"{_SIX_SEEDS}",
          threshold=0.0, declared="2026-12-07",
          history=(Change("2026-12-08", "effect",
                          old="KD on the labelled 3% from teacher layers minus the same from random layers, in points",
                          new=f"KD on the labelled 3% from teacher layers minus the same from random layers, in "
                              f"points, {_SIX_SEEDS}",
                          why="Declared with three seeds per arm. Run with LIGHTKD_SEED=1, the random-layer students "
                              "scattered (test accuracy 65.4% to 72.8%: one stopped after 100 steps, one reached the "
                              "40-epoch ceiling) and three seeds gave +6.96 points [-2.33, +16.26], inconclusive. "
                              "A 3% student costs a tenth of a whole-split one, so the 3% arms now train six seeds; "
                              "the claim and its threshold are unchanged."),)),
    Claim("distilbert_60pct_faster",
          statement="Removing half of the layers makes the student 60% faster",
          quote="while retaining 97% of its language understanding capabilities and being 60% faster",
          source="Sanh et al. 2019 (DistilBERT), abstract and Section 4 (410 s vs 668 s on a CPU)",
          effect="teacher time / student time, batch 1, 128 tokens, median of per-round ratios",
          threshold=1.6, unit="x", paper=1.6, declared="2026-12-07"),
]}


# ------------------------------------------------------------------ stages
def setup(cfg: Config) -> SimpleNamespace:
    """The teacher, its tokenizer, the splits (cut to the config's sizes), and
    the teacher's answers on the test split."""
    if cfg.teacher == "minilm-l6":
        teacher, tokenizer = zoo.fine_tuned_teacher(cfg.task, "minilm-l6")
    else:
        teacher, tokenizer = _hub_classifier(cfg.teacher)
    dataset = data.load_text_classification(cfg.task)
    cut = lambda split, n: split if n is None else data.TextSplit(split.texts[:n], split.labels[:n])
    train_split, dev, test = cut(dataset.train, cfg.train_size), cut(dataset.dev, cfg.dev_size), \
        cut(dataset.test, cfg.test_size)
    labelled = cut(train_split, max(2, round(cfg.labelled_fraction * len(train_split))))
    batches = lambda split, **kw: data.text_batches(split, tokenizer, batch_size=64, max_length=cfg.max_length, **kw)
    env = SimpleNamespace(teacher=teacher.eval().to(device()), tokenizer=tokenizer, train=train_split,
                          labelled=labelled, dev=dev, test=test, num_labels=dataset.num_labels,
                          dev_batches=batches(dev), test_batches=batches(test))
    env.data_key = _digest(train_split, labelled, dev, test)
    env.teacher_eval = zoo.cached_evaluate(teacher, env.test_batches)
    env.teacher_correct = (env.teacher_eval["predictions"] == env.teacher_eval["labels"]).numpy()
    env.teacher_outputs = None
    return env


def teacher_outputs(cfg: Config, env: SimpleNamespace):
    """The teacher's logits and last hidden states on every training sentence,
    computed once and kept in the cache (TinyViT's trick): every student that
    learns from the teacher reads them instead of running it. The labelled 3%
    are the first sentences of the split, so the same outputs serve them."""
    if env.teacher_outputs is None:
        if not cfg.cache_teacher:
            env.teacher_outputs = env.teacher  # BERT-base on SST-2: run the teacher live on the GPU
        else:
            order = data.text_batches(env.train, env.tokenizer, batch_size=64, max_length=cfg.max_length)
            env.teacher_outputs = distill.TeacherCache.stored(env.teacher, order, features=[("hidden", -1)],
                                                              dtype=torch.bfloat16, bf16=train.bf16_pays())
    return env.teacher_outputs


def make_student(cfg: Config, env: SimpleNamespace, arm: Arm, seed: int):
    """Every other teacher layer (DistilBERT's initialisation), or the same shape
    drawn at random; the word table stays the teacher's either way (frozen)."""
    layers = cfg.layers or blocks.spread_layers(blocks.num_layers(env.teacher), cfg.student_layers)
    student = blocks.student_from_teacher(env.teacher, layers, init=arm.init, seed=seed)
    if arm.init == "random":
        student.base_model.embeddings.load_state_dict(env.teacher.base_model.embeddings.state_dict())
    if cfg.freeze_embeddings:
        student.base_model.embeddings.word_embeddings.weight.requires_grad_(False)
    return student


def student_loss(cfg: Config, env: SimpleNamespace, arm: Arm, student):
    """Cross-entropy on the labels, or the teacher's soft targets at temperature T
    (weight alpha, labels 1 - alpha) plus the cosine term on the last hidden state."""
    if arm.alpha == 0 and not arm.cosine:
        return train.classification_loss
    matches, hard = distill.kd_matches(arm.alpha, cosine_weight=arm.cosine)
    return distill.DistillationLoss(teacher_outputs(cfg, env), student, matches, temperature=cfg.temperature,
                                    hard_weight=hard)


def train_student(cfg: Config, env: SimpleNamespace, arm_name: str, seed: int):
    """One student, trained until its dev accuracy stops improving (or read from
    the cache: the key holds the config fields and code this stage uses, the
    teacher, the data, the arm and the seed). ``lightkd_info`` keeps its
    learning curve, whether early stopping ended it, and its test answers."""
    arm = ARMS[arm_name]
    split = env.labelled if arm.sentences == "labelled" else env.train
    if arm.alpha == 1:  # the soft-targets-only student never sees a label
        split = data.TextSplit(split.texts, None)
    spec = stage_key(train_student, cfg, arm=dataclasses.asdict(arm), seed=seed,
                     teacher=zoo.model_identity(env.teacher), data=env.data_key)

    def fit(student):
        batches = data.text_batches(split, env.tokenizer, batch_size=cfg.batch_size, max_length=cfg.max_length,
                                    shuffle=True, seed=seed)
        epochs = cfg.small_max_epochs if arm.sentences == "labelled" else cfg.max_epochs
        every = max(cfg.min_eval_steps, len(batches) // cfg.evals_per_epoch)
        total = max(1, round(epochs * len(batches)))
        result = train.fit(student, batches, env.dev_batches, max_steps=total, lr=cfg.lr, seed=seed,
                           loss=student_loss(cfg, env, arm, student), eval_every=every,
                           early_stop_patience=cfg.patience, progress=False)
        test = train.evaluate(student, env.test_batches)
        return {"test_accuracy": test["accuracy"],
                "test_correct": (test["predictions"] == test["labels"]).int().tolist(),
                "dev_curve": [list(e) for e in result.evals], "best_step": result.best_step,
                "steps": result.steps, "max_steps": total, "converged": result.steps < total,
                "history": [{"step": h["step"], "loss": h.get("loss", h.get("ce"))} for h in result.history]}

    return zoo.cached("student-distilbert", spec, lambda: make_student(cfg, env, arm, seed), fit, verbose=False)


SIZES = {"train_size": "training sentences", "labelled_fraction": "labelled share for Hinton's test",
         "dev_size": "dev sentences (early stopping)", "test_size": "test sentences scored",
         "max_epochs": "epoch ceiling (whole split)", "small_max_epochs": "epoch ceiling (3% runs)",
         "evals_per_epoch": "dev evaluations per epoch", "patience": "evaluations without improvement to stop",
         "seeds": "seeds per arm (whole split)", "main_seeds": "seeds of the KD + cosine student",
         "small_seeds": "seeds per arm (3% runs)", "arms": "arms",
         "latency_rounds": "timing rounds"}


def sizes_table(cfg: Config) -> str:
    """The sizes this scale runs at, as a Markdown table for the reader ("all":
    the whole split), with the command that runs the other scale."""
    other = "tiny" if current_scale() == "book" else "book"
    show = lambda k, v: ("all" if v is None else f"{v:.0%}" if k == "labelled_fraction" else
                         ", ".join(v) if isinstance(v, tuple) else f"{v:g}" if isinstance(v, float) else str(v))
    rows = "\n".join(f"| {what} | {show(k, getattr(cfg, k))} |" for k, what in SIZES.items())
    return (f"This page ran at **{current_scale()}** scale, the sizes below. Set `LIGHTKD_SCALE={other}` before "
            f"starting the notebook to run it at {other} scale.\n\n| size | value |\n|---|---|\n{rows}")


def seeds_of(cfg: Config, arm: str | None = None) -> list[int]:
    """The seeds an arm trains on (default: a whole-split arm's). Arms on the
    same sentences share their first seeds, so every comparison is paired; the
    KD + cosine student, which the 97% claim rests on alone, trains more."""
    from ..common import default_seed
    small = arm is not None and ARMS[arm].sentences == "labelled"
    count = cfg.small_seeds if small else cfg.main_seeds if arm == "kd" else cfg.seeds
    return [default_seed() + k for k in range(count)]


def train_arms(cfg: Config, env: SimpleNamespace, on_student=None) -> dict:
    """Every arm of the config on its seeds (``seeds_of``: the same seeds for
    arms on the same sentences, so comparisons are paired).
    ``on_student(arm, seed, student)`` after each."""
    students = {}
    for arm in cfg.arms:
        for seed in seeds_of(cfg, arm):
            students[arm, seed] = train_student(cfg, env, arm, seed)
            if on_student is not None:
                on_student(arm, seed, students[arm, seed])
    return students


def measure(cfg: Config, env: SimpleNamespace, students: dict) -> SimpleNamespace:
    """Latency at batch 1, 128 tokens, teacher and one student timed round-robin
    on this process's threads; parameters and size on disk."""
    arm = "kd" if "kd" in cfg.arms else cfg.arms[0]
    student = students[arm, seeds_of(cfg)[0]]
    teacher = env.teacher.cpu()
    lat = bench.compare_latency({"teacher": teacher, "student": student.cpu()}, batch_size=1, seq_len=128,
                                reference="teacher", rounds=cfg.latency_rounds, num_threads=torch.get_num_threads())
    ratios = np.array(lat["teacher"].times_ms) / np.array(lat["student"].times_ms)
    return SimpleNamespace(latency=lat, ratios=ratios, speedup=results.median_interval(ratios), student=student,
                           teacher_params=bench.count_params(teacher), student_params=bench.count_params(student),
                           teacher_size=bench.size_on_disk(teacher), student_size=bench.size_on_disk(student))


def study_of(env: SimpleNamespace, students: dict) -> Study:
    st = Study(len(env.test))
    for (arm, seed), student in students.items():
        st.add(arm, seed, student.lightkd_info["test_correct"])
    return st


def report(cfg: Config, rec, env: SimpleNamespace, students: dict, speed: SimpleNamespace) -> dict:
    """Record the metrics, the models and the claim ledger; returns the verdicts."""
    st = study_of(env, students)
    converged = lambda *arms: all(students[a, s].lightkd_info["converged"] for a in arms for s in seeds_of(cfg, a))
    t_acc = env.teacher_eval["accuracy"]
    record(rec, METRICS["teacher.accuracy"], t_acc, note=_where(cfg, "the fine-tuned teacher"))
    main = "kd" if "kd" in cfg.arms else cfg.arms[0]
    accs = st.accuracies(main)
    record(rec, METRICS["student.accuracy"], float(np.mean(accs)), note=_where(cfg, f"{ARMS[main].label}, "
                                                                                     f"mean of {len(accs)} seeds"))
    record(rec, METRICS["student.retained"], float(np.mean(accs)) / t_acc)
    record(rec, METRICS["student.params_ratio"], speed.student_params / speed.teacher_params)
    record(rec, METRICS["student.speedup"], speed.speedup[0],
           note=f"batch 1, 128 tokens, {_threads()}, median of {len(speed.ratios)} per-round ratios")
    for who in ("teacher", "student"):
        record(rec, METRICS[f"{who}.latency_ms"], speed.latency[who].median_ms)
        record(rec, METRICS[f"{who}.params"], getattr(speed, f"{who}_params"))
        record(rec, METRICS[f"{who}.size"], getattr(speed, f"{who}_size"))
    for arm in cfg.arms:
        acc = st.accuracy(arm)
        rec.record(f"arms.{arm}.accuracy", acc.effect, unit="fraction", note=f"{ARMS[arm].label}; mean of "
                   f"{len(st.seeds(arm))} seeds")
        rec.record(f"arms.{arm}.steps", float(np.mean([students[arm, s].lightkd_info["steps"]
                                                        for s in st.seeds(arm)])), unit="count",
                   note="mean steps to early stopping")
    rec.model("ch04_teacher", accuracy=t_acc, latency_ms=speed.latency["teacher"].median_ms,
              params=speed.teacher_params, size_bytes=speed.teacher_size, method="fine-tuned teacher")
    kd_acc = st.accuracy(main)
    rec.model("ch04_distilbert_student", accuracy=kd_acc.effect, accuracy_ci=(kd_acc.low, kd_acc.high),
              latency_ms=speed.latency["student"].median_ms, params=speed.student_params,
              size_bytes=speed.student_size, method=f"DistilBERT-style: {ARMS[main].label}, "
                                                    f"{cfg.student_layers} of {blocks.num_layers(env.teacher)} layers",
              note=f"mean of seeds {st.seeds(main)}; latency batch 1, 128 tokens")

    verdicts = {}
    claim = lambda cid, estimate, *arms, note=None: verdicts.__setitem__(
        cid, judge(rec, CLAIMS[cid], estimate, converged=converged(*arms), note=note))
    if {"kd_3pct", "labels_3pct"} <= set(cfg.arms):
        claim("kd_beats_labels_3pct", st.difference("kd_3pct", "labels_3pct"), "kd_3pct", "labels_3pct",
              note=f"{len(env.labelled)} labelled sentences, seeds {st.seeds('kd_3pct')}")
    if "kd" in cfg.arms:
        claim("distilbert_keeps_97", st.retention_gap("kd", env.teacher_correct, 0.97), "kd",
              note=f"retained {np.mean(st.accuracies('kd')) / t_acc:.1%} of the teacher's accuracy")
    if {"soft_only", "labels"} <= set(cfg.arms):
        claim("soft_targets_replace_labels", st.difference("soft_only", "labels"), "soft_only", "labels")
    if {"kd_3pct", "random_3pct"} <= set(cfg.arms):
        claim("layer_init_beats_random", st.difference("kd_3pct", "random_3pct"), "kd_3pct", "random_3pct")
    claim("distilbert_60pct_faster", speed.speedup, note=f"{len(speed.ratios)} rounds, {_threads()}")
    return verdicts


# ------------------------------------------------------------------ the recipe
def run(cfg: Config, out: Path) -> dict:
    """Every stage, in order: what the command line runs at any scale."""
    rec = results.Recorder(CHAPTER, out=out, name="distilbert", code=chapter_code())
    env = setup(cfg)
    students = train_arms(cfg, env)
    speed = measure(cfg, env, students)
    report(cfg, rec, env, students, speed)
    if is_main_process() and current_scale() != "tiny" and cfg.teacher != "minilm-l6":
        speed.student.save_pretrained(Path(out) / "distilbert-student")
    return saved(rec)


def chapter_code() -> str | None:
    from . import chapter_digest
    return chapter_digest(CHAPTER)


def _hub_classifier(name: str):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    try:
        return (AutoModelForSequenceClassification.from_pretrained(name, attn_implementation="eager"),
                AutoTokenizer.from_pretrained(name))
    except OSError as e:
        raise SourceMissing(f"could not load {name!r} ({str(e).splitlines()[0]}); it needs the Hugging Face hub or "
                            "a local folder of a fine-tuned classifier") from None


def _digest(*splits) -> str:
    h = hashlib.sha256()
    for split in splits:
        h.update("\n".join(split.texts).encode())
        h.update(bytes(str(list(split.labels or [])), "utf8"))
    return h.hexdigest()[:16]


def _threads() -> str:
    n = torch.get_num_threads()
    return f"{n} thread" + ("" if n == 1 else "s")


def _where(cfg: Config, what: str) -> str:
    return f"{what}; {cfg.teacher} on {cfg.task}, test split"


DISTILBERT = Recipe(
    "distilbert", CHAPTER, "a half-depth student from every other teacher layer, trained to early stopping: labels, "
                           "KD + cosine, soft targets only",
    tiny=TINY, book=BOOK, paper=PAPER, run=run,
    notes="paper: one GPU, a few hours for 3 epochs of SST-2 per student (bert-base-uncased teacher from the hub); "
          "DistilBERT's MLM pre-training distillation (distill.distilbert_matches) is not part of this task-level "
          "recipe")

RECIPES = [DISTILBERT]
