"""TinyBERT: layer-wise, two-stage distillation with data augmentation.

Jiao et al. (2020) distil a BERT into a student with fewer and narrower
layers by matching, layer by layer, what the teacher computes, not only what
it predicts. Read top to bottom:

1. The losses, following the official ``task_distill.py``: attention loss
   (MSE on the pre-softmax scores, masked keys set to 0), hidden-state loss
   through one learnable projection ``W_h`` (embeddings included), and the
   prediction loss (soft cross-entropy at temperature T). All are
   ``lightkd.distill`` losses; ``attention_loss`` and ``hidden_loss`` spell
   them out for the chapter and its exercises.
2. The layer map g(m) as data: ``layer_map("uniform", 6, 3) -> [0, 2, 4, 6]``
   (g(0) = 0 is the embedding layer), and ``tinybert_matches`` turns a map
   into the ``distill.Match`` list of one stage.
3. The student: a BERT with fewer, narrower layers and the teacher's number
   of heads (the attention loss compares head by head), built from the
   teacher's config by ``make_student``.
4. The two stages: ``general_distillation`` (attention + hidden losses on
   unlabelled text, cached) and ``task_distillation`` (intermediate layers,
   then the prediction layer) on a task's sentences.
5. Data augmentation: ``Augmenter`` replaces words by GloVe neighbours (or,
   online, a masked language model's guesses for single-piece words).
6. Exercise checks: ``check_attention_loss``, ``check_layer_map``.
"""
from __future__ import annotations

import json
import math
import random
import re
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import distill, train, zoo
from .blocks import LAYER_MAPS, key_mask, layer_map, low_rank, require_rank
from .common import LightKDError, cache_dir, cached_file, default_seed, require_tensor, set_seed
from .data import TextSplit, load_word_vectors, text_batches
from .exercises import check_function

STAGES = ("general", "intermediate", "prediction")
VERSION = 1  # bump when a recipe below changes: it is part of every cache key


# ------------------------------------------------------------------ losses
def attention_loss(student_scores, teacher_scores, mask=None) -> torch.Tensor:
    """TinyBERT's attention loss on pre-softmax scores QK^T / sqrt(d), (B, H, L, L).

    Scores at masked keys (the official code sees them as <= -100 after the
    additive mask) are set to 0 in both models, so padding adds nothing.
    The mean runs over the rows of real query tokens (the official code also
    averages over padded query rows; without padding the two are equal).
    """
    require_tensor("student_scores", student_scores, dims=4)  # an empty batch: the mean of nothing is NaN
    if student_scores.shape != teacher_scores.shape:
        raise LightKDError(f"attention scores {tuple(student_scores.shape)} vs {tuple(teacher_scores.shape)}: "
                           "the attention loss compares head by head, so the student needs the teacher's "
                           "number of heads")
    s, t = student_scores.float(), teacher_scores.float()
    if mask is None:
        return ((s - t) ** 2).mean()
    keys = key_mask(mask)
    s, t = s.masked_fill(~keys, 0.0), t.masked_fill(~keys, 0.0)
    rows = mask[:, None, :, None].to(s.dtype).expand_as(s)
    return (((s - t) ** 2) * rows).sum() / rows.sum().clamp_min(1.0)


def hidden_loss(student_hidden, teacher_hidden, w_h: nn.Module, mask=None) -> torch.Tensor:
    """MSE(h_S W_h, h_T) over real tokens: W_h lifts the narrow student to the teacher's width."""
    return distill.mse_loss(w_h(student_hidden), teacher_hidden, mask)


def prediction_loss(student_logits, teacher_logits, T: float = 1.0) -> torch.Tensor:
    """Soft cross-entropy at temperature T (no T^2 factor, no hard labels: the official recipe)."""
    return distill.soft_cross_entropy(student_logits, teacher_logits, T)


# -------------------------------------------------------------- layer maps
# g(m), which teacher layer student layer m learns from, is ``blocks.layer_map``
# (the vision-language students use it too); imported above as
# ``tinybert.layer_map`` / ``tinybert.LAYER_MAPS``.


def _check_count(value, what):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LightKDError(f"{what} must be a positive integer, got {value!r}")


def make_projection(student_hidden: int, teacher_hidden: int, per_layer: int | None = None):
    """W_h: one shared Linear (the official code), or ``per_layer`` separate ones."""
    if per_layer is None:
        return nn.Linear(student_hidden, teacher_hidden)
    return nn.ModuleList([nn.Linear(student_hidden, teacher_hidden) for _ in range(per_layer)])


def _require_map(g) -> list:
    """g(0), g(1), ..., g(M) as ``layer_map`` gives it: g(0) = 0 maps the embeddings to the embeddings
    (a g(0) of another layer would match the student's embeddings with a teacher layer's output)."""
    if isinstance(g, (str, int)) or not hasattr(g, "__iter__"):
        raise LightKDError(f"g must be the layer map g(0..M) from layer_map, got {g!r}")
    g = list(g)
    if len(g) < 2 or g[0] != 0 or isinstance(g[0], bool):
        raise LightKDError(f"g must be the layer map g(0..M) from layer_map: g(0) = 0 (the embeddings), then one "
                           f"teacher layer per student layer, got {g!r}")
    return g


def tinybert_matches(g, stage: str, w_h=None, *, attention: bool = True, hidden: bool = True,
                     temperature: float = 1.0) -> list:
    """The distill.Match list of one TinyBERT stage for the layer map ``g`` (from ``layer_map``).

    "general" and "intermediate": hidden states g(m) -> m for m = 0..M through
    ``w_h`` (a shared module, or a ModuleList with one per m), attention
    scores of teacher layer g(m) -> student layer m for m = 1..M.
    "prediction": soft cross-entropy on the logits at ``temperature``.
    """
    if stage not in STAGES:
        raise LightKDError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    if stage == "prediction":
        return [distill.Match(None, None, "logits", "soft_ce", temperature=temperature)]
    g = _require_map(g)
    if not (attention or hidden):
        raise LightKDError("an intermediate stage needs the attention loss, the hidden loss or both")
    matches = []
    if hidden:
        for m, t in enumerate(g):
            proj = w_h[m] if isinstance(w_h, nn.ModuleList) else w_h
            matches.append(distill.Match(t, m, "hidden", "mse", projection=proj))
    if attention:  # attention index i is layer i + 1
        matches += [distill.Match(t - 1, m - 1, "attention_scores", "mse") for m, t in enumerate(g) if m > 0]
    return matches


def require_heads(teacher, student) -> None:
    t, s = teacher.config.num_attention_heads, student.config.num_attention_heads
    if t != s:
        raise LightKDError(f"the teacher has {t} heads and the student {s}: the attention loss compares "
                           f"score maps head by head, so give the student {t} heads (a narrower head "
                           "dimension is fine) or turn the attention loss off")


def distillation_loss(teacher, student, g, stage: str, w_h=None, *, attention: bool = True,
                      hidden: bool = True, temperature: float = 1.0) -> distill.DistillationLoss:
    """A ``train.fit`` loss for one stage; ``teacher`` is a model or a ``distill.TeacherCache``."""
    config = teacher.config if hasattr(teacher, "config") else None
    n_teacher = config.num_hidden_layers if config is not None else teacher.teacher_layers
    g = _require_map(g)
    layer_map(g[1:], n_teacher, student.config.num_hidden_layers)  # validates the map against both
    if stage != "prediction":
        if attention:
            require_heads(teacher, student)
        if hidden and w_h is None:
            raise LightKDError("the hidden loss needs W_h (make_projection): the student is narrower")
    matches = tinybert_matches(g, stage, w_h, attention=attention, hidden=hidden, temperature=temperature)
    return distill.DistillationLoss(teacher, student, matches, temperature=temperature)


# ----------------------------------------------------------------- student
def student_config(teacher, layers: int = 3, hidden: int = 192, heads: int | None = None,
                   intermediate: int | None = None):
    """A BERT config like the teacher's (vocabulary, positions, labels) with fewer, narrower layers."""
    from transformers import BertConfig
    heads = heads or teacher.config.num_attention_heads
    for value, what in ((layers, "layers"), (hidden, "hidden"), (heads, "heads")):
        _check_count(value, what)
    if hidden % heads:
        raise LightKDError(f"hidden size {hidden} is not divisible by {heads} heads")
    keep = ("vocab_size", "max_position_embeddings", "type_vocab_size", "pad_token_id", "num_labels",
            "id2label", "label2id", "hidden_act", "layer_norm_eps")
    kwargs = {k: getattr(teacher.config, k) for k in keep if hasattr(teacher.config, k)}
    return BertConfig(**kwargs, num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                      intermediate_size=intermediate or 4 * hidden)


def pca_basis(weight: torch.Tensor, dim: int) -> torch.Tensor:
    """The top ``dim`` right singular vectors of a (vocab, width) table: (width, dim)."""
    require_rank(dim, weight, "dim")
    return low_rank(weight, dim)[1].T.contiguous()


def select_weights(teacher, student, teacher_layers) -> nn.Module:
    """Initialise a narrower student with a subset of the teacher's weights.

    "Weight selection" (Xu et al., 2024): student layer m starts as teacher
    layer ``teacher_layers[m]`` keeping every k-th coordinate of the residual
    stream, of each head and of the FFN, the same coordinates everywhere, so
    the pieces still fit together. Not the paper's TinyBERT (its student
    starts random); our budget is a few minutes, not days.
    """
    t_cfg, s_cfg = teacher.config, student.config
    if t_cfg.num_attention_heads != s_cfg.num_attention_heads:
        raise LightKDError("weight selection keeps the teacher's heads: give the student as many heads")
    width = lambda big, small: torch.arange(0, big, big // small)[:small]
    res = width(t_cfg.hidden_size, s_cfg.hidden_size)
    ffn = width(t_cfg.intermediate_size, s_cfg.intermediate_size)
    t_head, s_head = t_cfg.hidden_size // t_cfg.num_attention_heads, s_cfg.hidden_size // s_cfg.num_attention_heads
    heads = torch.cat([h * t_head + width(t_head, s_head) for h in range(t_cfg.num_attention_heads)])
    def rows_cols(name):  # which rows (outputs) and columns (inputs) of a teacher weight to keep
        for part, rc in (("attention.self.", (heads, res)), ("attention.output.dense", (res, heads)),
                         ("intermediate.dense", (ffn, res)), ("output.dense", (res, ffn)),
                         ("pooler.dense", (res, res)), ("classifier", (None, res))):
            if part in name:
                return rc
        return None

    t_state = teacher.state_dict()
    new = {}
    for name, value in student.state_dict().items():
        source = name
        if ".layer." in name:
            prefix, rest = name.split(".layer.", 1)
            m, rest = rest.split(".", 1)
            source = f"{prefix}.layer.{teacher_layers[int(m)]}.{rest}"
        t = t_state[source]
        rc = rows_cols(name)
        if name.endswith("_embeddings.weight"):
            t = t[:, res]
        elif "LayerNorm" in name:
            t = t[res]
        elif rc is not None:
            rows, cols = rc
            if name.endswith("weight"):
                t = t[:, cols] if rows is None else t[rows][:, cols]
            elif rows is not None:
                t = t[rows]
        if t.shape != value.shape:
            raise LightKDError(f"weight selection: {name} is {tuple(value.shape)} but the selection gave "
                               f"{tuple(t.shape)}; the student's sizes must divide the teacher's")
        new[name] = t.clone()
    student.load_state_dict(new)
    return student


def make_student(teacher, config=None, *, seed: int | None = None, init: str = "pca",
                 freeze_word_embeddings: bool = True, per_layer_projection: bool = False, map_kind="uniform"):
    """The student and its W_h, as one ``ModuleDict(student=..., w_h=...)``.

    ``init="random"`` is the paper's student: every weight random.
    ``"pca"`` (a departure) starts the embedding tables as the teacher's
    projected on its word embeddings' top principal directions and W_h as the
    way back; the layers stay random. ``"select"`` (a bigger departure) also
    starts every layer from the teacher's layer g(m) by weight selection
    (``select_weights``), with W_h putting each coordinate back where it came
    from. ``freeze_word_embeddings`` keeps the word table fixed: it is 80% of
    the student and updating it costs as much as the rest of a training step.
    """
    from transformers import BertForSequenceClassification
    if init not in ("pca", "random", "select"):
        raise LightKDError(f"init must be 'pca', 'random' or 'select', got {init!r}")
    config = config or student_config(teacher)
    set_seed(seed)
    student = BertForSequenceClassification(config)
    t_hidden = teacher.config.hidden_size
    n_proj = config.num_hidden_layers + 1 if per_layer_projection else None
    w_h = make_projection(config.hidden_size, t_hidden, n_proj)
    projections = w_h if isinstance(w_h, nn.ModuleList) else [w_h]
    if init == "pca":
        t_emb, s_emb = teacher.bert.embeddings, student.bert.embeddings
        basis = pca_basis(t_emb.word_embeddings.weight.detach(), config.hidden_size)  # (t_hidden, s_hidden)
        with torch.no_grad():
            for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
                getattr(s_emb, name).weight.copy_(getattr(t_emb, name).weight @ basis)
            for lin in projections:
                lin.weight.copy_(basis)
                lin.bias.zero_()
    elif init == "select":
        g = layer_map(map_kind, teacher.config.num_hidden_layers, config.num_hidden_layers)
        select_weights(teacher, student, [t - 1 for t in g[1:]])
        res = torch.arange(0, t_hidden, t_hidden // config.hidden_size)[:config.hidden_size]
        with torch.no_grad():
            for lin in projections:
                lin.weight.zero_()
                lin.weight[res, torch.arange(config.hidden_size)] = 1.0
                lin.bias.zero_()
    student.bert.embeddings.word_embeddings.weight.requires_grad_(not freeze_word_embeddings)
    return nn.ModuleDict({"student": student, "w_h": w_h})


# ------------------------------------------------------------------ stages
def fit_stage(bundle, teacher, batches, g, stage: str, *, steps: int, lr: float, seed: int | None = None,
              temperature: float = 1.0, attention: bool = True, hidden: bool = True, warmup_ratio: float = 0.1,
              bf16="auto", progress: bool | None = None):
    """Train ``bundle["student"]`` (and W_h) through one stage with ``train.fit``; returns its FitResult."""
    _check_count(steps, "steps")
    student, w_h = bundle["student"], bundle["w_h"]
    loss = distillation_loss(teacher, student, g, stage, w_h, attention=attention, hidden=hidden,
                             temperature=temperature)
    params = [p for p in list(student.parameters()) + list(loss.parameters()) if p.requires_grad]
    params = list({id(p): p for p in params}.values())  # a shared W_h appears once per match
    optimizer = torch.optim.AdamW([{"params": [p for p in params if p.ndim > 1], "weight_decay": 0.01},
                                   {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}], lr=lr)
    return train.fit(student, batches, max_steps=steps, lr=lr, loss=loss, optimizer=optimizer, seed=seed,
                     warmup_ratio=warmup_ratio, bf16=bf16, progress=progress)


def general_distillation(teacher, tokenizer, texts, *, layers: int = 3, hidden: int = 192,
                         intermediate: int = 768, map_kind="uniform", steps: int = 300, batch_size: int = 32,
                         max_length: int = 64, lr: float = 5e-4, seed: int | None = None,
                         init: str = "pca", verbose: bool | None = None):
    """Stage 1: attention + hidden losses on unlabelled ``texts`` (no MLM), cached.

    Returns the ``ModuleDict(student, w_h)``; ``.lightkd_info`` holds the loss
    history of the run that produced it.
    """
    seed = default_seed() if seed is None else seed
    config = student_config(teacher, layers, hidden, intermediate=intermediate)
    g = layer_map(map_kind, teacher.config.num_hidden_layers, layers)
    spec = {"teacher": zoo.model_identity(teacher), "texts": len(texts),
            "first": texts[0] if texts else "", "shape": [layers, hidden, intermediate], "map": g, "steps": steps,
            "batch_size": batch_size, "max_length": max_length, "lr": lr, "seed": seed, "init": init,
            "version": VERSION}
    corpus = TextSplit(list(texts), [0] * len(texts))

    def make():
        return make_student(teacher, config, seed=seed, init=init, map_kind=map_kind)

    def run(bundle):
        batches = _batches(corpus, tokenizer, batch_size, max_length, seed)
        result = fit_stage(bundle, teacher, batches, g, "general", steps=steps, lr=lr, seed=seed)
        return {"history": result.history, "seconds": result.seconds}

    return zoo.cached("tinybert-general", spec, make, run, verbose=verbose)


def _batches(split, tokenizer, batch_size, max_length, seed, shuffle=True):
    return text_batches(split, tokenizer, batch_size=batch_size, max_length=max_length, shuffle=shuffle, seed=seed)


def task_distillation(bundle, teacher, batches, g, *, intermediate_steps: int, prediction_steps: int,
                      lr: float = 5e-4, prediction_lr: float | None = None, temperature: float = 1.0,
                      seed: int | None = None, progress: bool | None = None) -> dict:
    """Stage 2 in place: intermediate layers (attention + hidden), then the
    prediction layer (soft cross-entropy). Either step count may be 0 to skip
    that part (the "without task-specific intermediate distillation" ablation).
    Returns each part's loss history."""
    histories = {}
    if intermediate_steps:
        histories["intermediate"] = fit_stage(bundle, teacher, batches, g, "intermediate", steps=intermediate_steps,
                                              lr=lr, seed=seed, progress=progress).history
    if prediction_steps:
        histories["prediction"] = fit_stage(bundle, teacher, batches, g, "prediction", steps=prediction_steps,
                                            lr=prediction_lr or lr, seed=seed, temperature=temperature,
                                            progress=progress).history
    if not histories:
        raise LightKDError("task distillation needs intermediate_steps or prediction_steps > 0")
    return histories


# ------------------------------------------------------------ augmentation
# NLTK's English stop words, the list the official augmentation skips.
STOPWORDS = frozenset("""
i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her hers herself
it its itself they them their theirs themselves what which who whom this that these those am is are was were be
been being have has had having do does did doing a an the and but if or because as until while of at by for with
about against between into through during before after above below to from up down in out on off over under again
further then once here there when where why how all any both each few more most other some such no nor not only own
same so than too very s t can will just don should now d ll m o re ve y ain aren couldn didn doesn hadn hasn haven
isn ma mightn mustn needn shan shouldn wasn weren won wouldn
""".split())


def basic_tokenize(text: str) -> list[str]:
    """Lower-cased words and punctuation marks, as BERT's basic tokenizer splits them."""
    return re.findall(r"[a-z0-9]+|[^a-z0-9\s]", text.lower())


def is_replaceable(word: str) -> bool:
    """The official rule: only alphabetic words that are not stop words."""
    return word.isalpha() and word not in STOPWORDS


def require_augmentation_args(p, k, copies) -> None:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise LightKDError(f"p is the probability of replacing a word and must lie in [0, 1] "
                           f"(TinyBERT uses 0.4), got {p!r}")
    _check_count(k, "K (candidates per word; TinyBERT uses 15)")
    _check_count(copies, "N (augmented copies per sentence; TinyBERT uses 20)")


class GloveNeighbours:
    """The K nearest words by cosine similarity in a word-vector table (the word itself excluded)."""

    def __init__(self, words, vectors, k: int = 15):
        _check_count(k, "K (candidates per word; TinyBERT uses 15)")
        self.words, self.k = list(words), k
        self.index = {w: i for i, w in enumerate(self.words)}
        self.unit = F.normalize(torch.as_tensor(vectors, dtype=torch.float32), dim=-1)
        self.memo: dict[str, list[str]] = {}

    def precompute(self, words, chunk: int = 1024) -> None:
        """Neighbours of many words at once: one matrix product per chunk."""
        todo = [w for w in dict.fromkeys(words) if w in self.index and w not in self.memo]
        for s in range(0, len(todo), chunk):
            part = todo[s:s + chunk]
            ids = torch.tensor([self.index[w] for w in part])
            sims = self.unit[ids] @ self.unit.T
            sims[torch.arange(len(part)), ids] = -float("inf")
            top = sims.topk(self.k, dim=-1).indices.tolist()
            for w, row in zip(part, top):
                self.memo[w] = [self.words[j] for j in row]

    def __call__(self, word: str) -> list[str]:
        if word not in self.index:
            return []
        if word not in self.memo:
            self.precompute([word])
        return self.memo[word]


class Augmenter:
    """TinyBERT's data augmentation.

    For each sentence: every replaceable word gets up to K candidates (a
    masked language model's guesses if the word is a single word piece and
    ``mlm`` is given, else its GloVe neighbours; none found: the word itself);
    each of N copies replaces each such word with probability p by a random
    candidate. Copies equal to the sentence or to an earlier copy are dropped,
    as in the official code, so a sentence may get fewer than N.
    """

    def __init__(self, tokenizer, words, vectors, *, p: float = 0.4, k: int = 15, copies: int = 20,
                 mlm=None, mlm_tokenizer=None):
        require_augmentation_args(p, k, copies)
        self.tokenizer, self.p, self.k, self.copies = tokenizer, float(p), k, copies
        self.glove = GloveNeighbours(words, vectors, k)
        self.mlm, self.mlm_tokenizer = mlm, mlm_tokenizer or tokenizer

    def _mlm_candidates(self, tokens, i) -> list[str]:
        """Top-K word pieces a masked LM predicts at word i (continuation pieces ## dropped)."""
        tok = self.mlm_tokenizer
        masked = tokens[:i] + [tok.mask_token] + tokens[i + 1:]
        batch = tok(" ".join(masked), return_tensors="pt", truncation=True)
        position = (batch["input_ids"][0] == tok.mask_token_id).nonzero()
        if len(position) == 0:
            return []
        with torch.no_grad():
            logits = self.mlm(**train.to_device(dict(batch), train.model_device(self.mlm))).logits[0, position[0, 0]]
        pieces = tok.convert_ids_to_tokens(logits.topk(self.k).indices.tolist())
        return [w for w in pieces if not w.startswith("##") and w != tokens[i]]

    def candidates(self, tokens, i) -> list[str]:
        word = tokens[i]
        single_piece = len(self.tokenizer.tokenize(word)) == 1
        found = self._mlm_candidates(tokens, i) if (self.mlm is not None and single_piece) else self.glove(word)
        return found or [word]

    def augment(self, text: str, rng: random.Random | None = None) -> list[str]:
        """Up to N augmented copies of one sentence (the sentence itself not included)."""
        rng = rng or random.Random(default_seed())
        tokens = basic_tokenize(text)
        options = {i: self.candidates(tokens, i) for i, w in enumerate(tokens) if is_replaceable(w)}
        seen, out = {" ".join(tokens)}, []
        for _ in range(self.copies):
            new = list(tokens)
            for i, cands in options.items():
                choice = rng.choice(cands)  # drawn first, then kept with probability p, as the official loop
                if rng.random() < self.p:
                    new[i] = choice
            sentence = " ".join(new)
            if sentence not in seen:
                seen.add(sentence)
                out.append(sentence)
        return out

    def augment_split(self, split: TextSplit, seed: int | None = None) -> tuple[TextSplit, list[int]]:
        """The sentences, then all their copies (same labels); also returns each row's source index.

        The originals keep their positions 0..n-1, so a teacher cache of the
        augmented split serves the un-augmented one too."""
        rng = random.Random(default_seed() if seed is None else seed)
        if self.mlm is None:  # one batched neighbour search for the whole split
            self.glove.precompute(w for t in split.texts for w in basic_tokenize(t) if is_replaceable(w))
        texts, labels, source = list(split.texts), list(split.labels), list(range(len(split)))
        for i, (text, label) in enumerate(zip(split.texts, split.labels)):
            for t in self.augment(text, rng):
                texts.append(t)
                labels.append(label)
                source.append(i)
        return TextSplit(texts, labels), source


def augmented_split(split: TextSplit, tokenizer, *, p: float = 0.4, k: int = 15, copies: int = 20,
                    seed: int | None = None, vectors: str = "glove-6b-50d", max_words: int = 100_000,
                    verbose: bool | None = None) -> tuple[TextSplit, list[int]]:
    """``Augmenter(...).augment_split(split)`` with GloVe candidates, cached in the lightkd cache."""
    require_augmentation_args(p, k, copies)
    seed = default_seed() if seed is None else seed
    verbose = train.progress_default() if verbose is None else verbose
    spec = {"texts": split.texts, "labels": split.labels, "p": p, "k": k, "copies": copies, "seed": seed,
            "vectors": vectors, "max_words": max_words, "tokenizer": getattr(tokenizer, "name_or_path", ""),
            "version": VERSION}
    path = cache_dir("data") / f"tinybert-augmented-{zoo.spec_hash(spec)}.json"
    built = []

    def build() -> bytes:
        start = time.perf_counter()
        words, table = load_word_vectors(vectors, max_words)
        out, source = Augmenter(tokenizer, words, table, p=p, k=k, copies=copies).augment_split(split, seed)
        built.append(f"augmented {len(split)} sentences into {len(out)} in {time.perf_counter() - start:.1f} s; cached")
        return json.dumps({"texts": out.texts, "labels": out.labels, "source": source}).encode()

    def decode(data: bytes) -> dict:
        payload = json.loads(data)
        texts, labels, source = payload["texts"], payload["labels"], payload["source"]
        n = len(split)
        # the originals first, in order, then their copies: anything else is not this entry
        if not (len(texts) == len(labels) == len(source) >= n and texts[:n] == list(split.texts)
                and all(isinstance(i, int) and 0 <= i < n for i in source)):
            raise ValueError("the augmented set does not start with this split's sentences")
        return payload

    payload = cached_file(path, build, decode)
    if verbose:
        print(built[0] if built else "loaded the augmented set from the cache")
    return TextSplit(payload["texts"], payload["labels"]), payload["source"]


# --------------------------------------------------------------- exercises
def _score_inputs(rng):
    b, h, n = rng.randint(1, 4), rng.choice([1, 2, 4, 12]), rng.randint(2, 9)
    scale = rng.choice([1.0, 3.0, 10.0])
    mask = torch.ones(b, n, dtype=torch.long)
    for row in range(b):
        mask[row, rng.randint(1, n):] = 0 if rng.random() < 0.7 else 1
    return torch.randn(b, h, n, n) * scale, torch.randn(b, h, n, n) * scale, mask


def check_attention_loss(candidate, trials: int = 20, seed: int | None = None) -> bool:
    """Exercise: ``attention_loss(student_scores, teacher_scores, mask)`` on random padded batches."""
    return check_function(candidate, attention_loss, _score_inputs, trials=trials, seed=seed, name="attention_loss")


def check_layer_map(candidate, trials: int = 20, seed: int | None = None) -> bool:
    """Exercise: ``layer_map(kind, n_teacher, n_student)`` for the three kinds of g(m)."""
    def make(rng):
        n_teacher = rng.choice([4, 6, 8, 12, 24])
        return rng.choice(list(LAYER_MAPS)), n_teacher, rng.randint(1, n_teacher)
    return check_function(lambda *a: list(candidate(*a)), layer_map, make, trials=trials, seed=seed,
                          name="layer_map")
