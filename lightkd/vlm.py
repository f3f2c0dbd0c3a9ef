"""Lightweight vision-language models: MiniVLM and DistilVLM, on visual
tokens from small pretrained convnets.

A vision-language model (VLM) of the OSCAR family (Li et al., 2020) reads a
picture as a set of *visual tokens* (region features from an object
detector) and a question as word pieces, and runs both through one BERT
encoder: every word can attend to every region and back. MiniVLM (Wang et
al., 2020) observed that at inference most of the time goes into the
detector, so it replaced it with a small EfficientNet-based extractor, and
BERT-base with MiniLM. DistilVLM (Fang et al., 2021) distils such a student
from a big VLM and notes that teacher and student see *different* regions:
token i of the teacher is not token i of the student, so a token-by-token
loss compares unrelated things. Its fix, *visual token alignment*, runs the
teacher on the student's regions (with the teacher's own features), so the
tokens correspond one to one; then attention and hidden states are distilled
token by token.

Here the regions are the cells of an extractor's feature grid. The teacher's
extractor (EfficientNet-Lite0 at 128 pixels) gives a 4 x 4 grid, the
student's (MobileNetV2 at 64 pixels) a 2 x 2 grid. Aligning = pooling the
teacher's 4 x 4 features into the student's 2 x 2 cells: the same regions,
seen with the teacher's features.

Read top to bottom:

1. Regions: ``grid_boxes`` (each cell's box, the geometry a detector would
   give), ``pool_tokens`` (a grid of tokens pooled to a coarser grid);
   ``PyramidExtractor`` / ``pyramid_tokens`` (a convnet's stride-16 and
   stride-32 maps on one grid, computed once and cached).
2. ``FusionLayer``: one post-norm BERT layer (``blocks.BertLayer``),
   returning its attention; ``FusionVLM``: visual tokens (projected to the width, plus
   their box) and word pieces in one encoder, a VQA head on [CLS].
   ``FusionVLM.from_bert`` copies a pretrained BERT's embeddings and layers.
3. MiniVLM: ``minivlm_from_pretrained`` (a few pretrained layers that have
   not seen the task, as the paper's student), ``minivlm_student`` (a few of
   a trained teacher's layers), ``VLMPipeline`` (extractor + fusion, for
   timing) and ``time_breakdown``.
4. Data: ``encode_questions``, ``VQABatches`` (re-iterable batches over
   cached visual tokens, text padded per batch).
5. DistilVLM: ``teacher_targets`` (the teacher's logits, hidden states and
   attentions on every training question, in the student's token layout:
   ``aligned`` or not), ``distilvlm_loss`` (labels + soft targets + hidden
   states + attention, token by token).
6. Retrieval with a dual encoder (CLIP's recipe on frozen features):
   ``text_features`` (a BERT's mean-pooled word pieces after its first few
   layers, cached), ``DualEncoder`` (one small head per side into a shared
   space, and a learned temperature), ``contrastive_loss`` (symmetric
   InfoNCE over a batch), ``similarity_kd_loss`` (the teacher's image-text
   scores over the batch as soft targets, DistilVLM's distillation with one
   token per side), ``train_dual``, ``retrieval_ranks`` / ``recall_at``.
7. Exercise checks.

Every model returns a ``lightkd.models.ModelOutput``.
"""
from __future__ import annotations

import math
import random

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import distill
from .blocks import BertLayer, additive_key_mask, encoder_layers, layer_map
from .common import (LightKDError, require_indices, require_number, require_positive_int,
                     require_temperature, require_tensor, require_weight)
from .models import ModelOutput
from .train import fit, model_device, to_device

BOX_FEATURES = 6            # x1, y1, x2, y2, width, height, all in [0, 1] (OSCAR's region geometry)
MAX_QUESTION_TOKENS = 16    # [CLS] + word pieces + [SEP]; easy-VQA's longest question needs 13
MODES = ("labels", "unaligned", "aligned")


# ------------------------------------------------------------------ 1. regions
def _check_side(side, name: str = "side") -> int:
    if isinstance(side, bool) or not isinstance(side, int) or side < 1:
        raise LightKDError(f"{name} must be a positive integer (cells per row), got {side!r}")
    return side


def grid_side(num_tokens: int, name: str = "visual") -> int:
    """The side of a square grid of ``num_tokens`` cells (4 -> 2, 16 -> 4)."""
    try:
        side = math.isqrt(int(num_tokens)) if int(num_tokens) == num_tokens and num_tokens >= 0 else -1
    except (TypeError, ValueError, RuntimeError):
        side = -1
    if side < 1 or side * side != num_tokens:
        raise LightKDError(f"{name} must hold a square grid of visual tokens (1, 4, 9, 16, ...), got {num_tokens}")
    return side


def grid_boxes(side: int) -> torch.Tensor:
    """(side*side, 6): the box of every grid cell, row by row, as
    (x1, y1, x2, y2, width, height) in fractions of the picture."""
    _check_side(side)
    edges = torch.arange(side + 1, dtype=torch.float32) / side
    y1, x1 = torch.meshgrid(edges[:-1], edges[:-1], indexing="ij")
    x1, y1 = x1.reshape(-1), y1.reshape(-1)
    size = torch.full_like(x1, 1.0 / side)
    return torch.stack([x1, y1, x1 + size, y1 + size, size, size], dim=-1)


def pool_tokens(tokens: torch.Tensor, side: int) -> torch.Tensor:
    """A (B, s*s, C) grid of tokens averaged into a coarser (B, side*side, C)
    grid: each new token covers exactly the cells of its region. This is
    visual token alignment for grids: the teacher's features of the
    student's regions."""
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 3:
        raise LightKDError(f"tokens must be (batch, cells, channels), got {getattr(tokens, 'shape', tokens)!r}")
    s = grid_side(tokens.shape[1], "tokens")
    _check_side(side)
    if s % side:
        raise LightKDError(f"side {side} does not divide the {s} x {s} grid: the regions would not nest")
    b, _, c = tokens.shape
    grid = tokens.transpose(1, 2).reshape(b, c, s, s)
    return F.avg_pool2d(grid, s // side).flatten(2).transpose(1, 2)


class PyramidExtractor(nn.Module):
    """Pictures -> visual tokens from two levels of a frozen convnet: the
    stride-16 map (edges, colours) and the final stride-32 map (parts,
    objects), each average-pooled to ``grid`` x ``grid`` cells and joined
    channel-wise. A two-level stand-in for MiniVLM's EfficientNet + BiFPN
    extractor: one pass through the backbone, no detector."""

    def __init__(self, extractor, grid: int):
        super().__init__()
        from .extractors import STRIDE16_UPTO
        if not hasattr(extractor, "backbone") or not hasattr(extractor, "prepare"):
            raise LightKDError(f"extractor must be an extractors.ImageExtractor (extractors.load_extractor), got "
                               f"{type(extractor).__name__}")
        self.extractor, self.grid = extractor, _check_side(grid, "grid")
        self.name = {"MobileNetV2": "mobilenet_v2", "EfficientNetLite0": "efficientnet_lite0"}.get(
            type(extractor.backbone).__name__)
        if self.name is None:
            raise LightKDError("PyramidExtractor needs a convnet extractor (mobilenet_v2 or efficientnet_lite0)")
        self.split = STRIDE16_UPTO[self.name]
        self.image_size = extractor.image_size

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.extractor.prepare(images)
        blocks = self.extractor.backbone.blocks()
        for block in blocks[:self.split]:
            x = block(x)
        middle = x
        for block in blocks[self.split:]:
            x = block(x)
        if self.grid > min(x.shape[-2:]):
            raise LightKDError(f"grid {self.grid} is finer than the final {tuple(x.shape[-2:])} map")
        maps = [F.adaptive_avg_pool2d(m, self.grid) for m in (middle, x)]
        return torch.cat(maps, 1).flatten(2).transpose(1, 2)

    def encode(self, images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
        return torch.cat([self(images[s:s + batch_size]) for s in range(0, len(images), batch_size)])


def load_pyramid(name: str, image_size: int, grid: int) -> PyramidExtractor:
    from .extractors import load_extractor
    return PyramidExtractor(load_extractor(name, image_size=image_size), grid)


def pyramid_tokens(name: str, images: torch.Tensor, *, data: str, image_size: int, grid: int) -> tuple:
    """The pyramid tokens of ``images`` (float32), computed once and cached
    (float16) like ``extractors.cached_tokens``; returns (tokens, info) with
    the seconds the encoding took."""
    import hashlib
    import time
    from . import zoo
    if not isinstance(data, str) or not data:
        raise LightKDError(f"data must name the pictures (a non-empty string), got {data!r}")
    if name not in PYRAMID_EXTRACTORS:
        raise LightKDError(f"name must be one of {', '.join(map(repr, PYRAMID_EXTRACTORS))} (a convnet with a "
                           f"stride-16 map), got {name!r}")
    require_tensor("images", images, dims=4)
    require_positive_int("image_size", image_size, minimum=32)
    _check_side(grid, "grid")
    pixels = images.detach().contiguous().cpu()
    spec = {"extractor": name, "image_size": image_size, "grid": grid, "data": data, "n": len(pixels),
            "pixels": hashlib.sha1(pixels.numpy().tobytes()).hexdigest()[:16], "pyramid": "s16+s32", "version": 1}

    def compute():
        extractor = load_pyramid(name, image_size, grid)
        start = time.perf_counter()
        tokens = extractor.encode(pixels)
        seconds = time.perf_counter() - start
        return {"tokens": tokens.half()}, {"seconds": round(seconds, 2), "ms_per_image": 1000 * seconds / len(pixels)}

    tensors, info = zoo.cached_tensors("vlm-pyramid-tokens", spec, compute)
    return tensors["tokens"].float(), info


PYRAMID_EXTRACTORS = ("mobilenet_v2", "efficientnet_lite0")  # the convnets PyramidExtractor reads two levels of


# ------------------------------------------------------------ 2. the fusion model
# The fusion encoder's layer is a plain post-norm BERT layer (its weight names are the
# flat ones of blocks.BertLayer: query, ..., attn_out, attn_norm, ffn_in, ffn_out, ffn_norm).
FusionLayer = BertLayer


class FusionVLM(nn.Module):
    """OSCAR-style single-stream VLM: [visual tokens] [CLS] question [SEP] in
    one encoder. The visual tokens come first so that the text's padding sits
    at the end of the sequence. A visual token's embedding is
    LayerNorm(W_f feature + W_b box) + the segment embedding of type 1; a
    word piece's is BERT's (word + position + segment 0). The VQA head
    reads the [CLS] token's last hidden state."""

    def __init__(self, visual_dim: int, num_answers: int, *, vocab_size: int = 30522, hidden: int = 384,
                 layers: int = 6, heads: int = 12, intermediate: int = 1536, max_positions: int = 512):
        super().__init__()
        for name, value in (("visual_dim", visual_dim), ("num_answers", num_answers), ("layers", layers),
                            ("vocab_size", vocab_size), ("hidden", hidden), ("heads", heads),
                            ("intermediate", intermediate), ("max_positions", max_positions)):
            require_positive_int(name, value)
        self.visual_dim, self.num_answers, self.hidden = visual_dim, num_answers, hidden
        self.max_text = max_positions
        self.word = nn.Embedding(vocab_size, hidden)
        self.position = nn.Embedding(max_positions, hidden)
        self.segment = nn.Embedding(2, hidden)
        self.text_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.visual_proj = nn.Linear(visual_dim, hidden)
        self.box_proj = nn.Linear(BOX_FEATURES, hidden)
        self.visual_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.layers = nn.ModuleList(FusionLayer(hidden, heads, intermediate) for _ in range(layers))
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden, eps=1e-12),
                                  nn.Linear(hidden, num_answers))

    @classmethod
    def from_bert(cls, bert, visual_dim: int, num_answers: int, layers=None) -> "FusionVLM":
        """A fusion model with a pretrained transformers ``BertModel``'s word,
        position and segment embeddings and (a choice of) its layers; the
        visual projection and the VQA head start fresh."""
        config = bert.config
        chosen = list(range(config.num_hidden_layers)) if layers is None else list(layers)
        if not chosen or any(not isinstance(i, int) or not 0 <= i < config.num_hidden_layers for i in chosen):
            raise LightKDError(f"layers must be indices 0..{config.num_hidden_layers - 1}, got {layers!r}")
        model = cls(visual_dim, num_answers, vocab_size=config.vocab_size, hidden=config.hidden_size,
                    layers=len(chosen), heads=config.num_attention_heads, intermediate=config.intermediate_size,
                    max_positions=config.max_position_embeddings)
        emb = bert.embeddings
        with torch.no_grad():
            model.word.weight.copy_(emb.word_embeddings.weight)
            model.position.weight.copy_(emb.position_embeddings.weight)
            model.segment.weight.copy_(emb.token_type_embeddings.weight)
            model.text_norm.load_state_dict(emb.LayerNorm.state_dict())
        _, bert_layers = encoder_layers(bert)
        for mine, i in zip(model.layers, chosen):
            mine.load_bert_layer(bert_layers[i])
        return model.to(model_device(bert))  # built on the CPU (same init draws), then beside the BERT

    # the two embeddings, then the encoder
    def embed_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        return self.text_norm(self.word(input_ids) + self.position(positions) + self.segment.weight[0])

    def embed_visual(self, visual: torch.Tensor) -> torch.Tensor:
        boxes = grid_boxes(grid_side(visual.shape[1])).to(visual)
        return self.visual_norm(self.visual_proj(visual) + self.box_proj(boxes)) + self.segment.weight[1]

    def encode(self, embeddings: torch.Tensor, mask: torch.Tensor):
        """Run the layers over (B, S, H) embeddings with a (B, S) 0/1 mask:
        (every hidden state, embeddings first; every layer's attention)."""
        key_bias = additive_key_mask(mask, embeddings.dtype)
        hidden, attentions = [embeddings], []
        for layer in self.layers:
            x, probs = layer(hidden[-1], key_bias)
            hidden.append(x)
            attentions.append(probs)
        return tuple(hidden), tuple(attentions)

    def check_inputs(self, visual, input_ids, attention_mask) -> None:
        if not isinstance(visual, torch.Tensor) or visual.dim() != 3:
            raise LightKDError(f"visual must be visual tokens (batch, tokens, {self.visual_dim}), "
                               f"got {getattr(visual, 'shape', type(visual).__name__)}")
        if visual.shape[0] == 0:
            raise LightKDError("visual is an empty batch: there is nothing to answer")
        if visual.shape[-1] != self.visual_dim:
            raise LightKDError(f"visual has {visual.shape[-1]} channels but this model reads {self.visual_dim} "
                               "(was it made by another extractor?)")
        grid_side(visual.shape[1])
        if not torch.isfinite(visual).all():
            raise LightKDError("visual holds NaN or inf: check the pictures and the extractor")
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.shape[0] != visual.shape[0]:
            raise LightKDError(f"input_ids must be (batch, length) with the batch of visual ({visual.shape[0]}), "
                               f"got {getattr(input_ids, 'shape', type(input_ids).__name__)}")
        if input_ids.shape[1] > self.max_text:
            raise LightKDError(f"input_ids has {input_ids.shape[1]} word pieces; this model takes at most {self.max_text}")
        if input_ids.is_floating_point() or (input_ids.numel() and (
                input_ids.min() < 0 or input_ids.max() >= self.word.num_embeddings)):
            raise LightKDError(f"input_ids must be integer word-piece ids in 0..{self.word.num_embeddings - 1}")
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise LightKDError(f"attention_mask {tuple(attention_mask.shape)} must match input_ids "
                               f"{tuple(input_ids.shape)}")

    def forward(self, visual: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                output_hidden_states: bool = False, output_attentions: bool = False) -> ModelOutput:
        self.check_inputs(visual, input_ids, attention_mask)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        v = visual.shape[1]
        x = torch.cat([self.embed_visual(visual), self.embed_text(input_ids)], dim=1)
        mask = torch.cat([torch.ones(visual.shape[:2], dtype=attention_mask.dtype, device=x.device),
                          attention_mask], dim=1)
        hidden, attentions = self.encode(x, mask)
        logits = self.head(hidden[-1][:, v])                        # the [CLS] token follows the visual tokens
        return ModelOutput(logits=logits, last_hidden_state=hidden[-1],
                           hidden_states=hidden if output_hidden_states else None,
                           attentions=attentions if output_attentions else None)


# ------------------------------------------------------------ 3. MiniVLM
def spread(n_teacher: int, n_student: int) -> list[int]:
    """Student layer j (1-based) learns from teacher layer j * (n_teacher // n_student):
    TinyBERT's uniform layer map (``blocks.layer_map``) without the embeddings."""
    return layer_map("uniform", n_teacher, n_student)[1:]


def minivlm_student(teacher: FusionVLM, visual_dim: int, n_layers: int = 2) -> FusionVLM:
    """MiniVLM's student: the teacher's embeddings and ``n_layers`` of its
    layers (spread evenly: 2 of 6 -> layers 3 and 6), a fresh visual
    projection for the light extractor's features, a fresh VQA head."""
    if not isinstance(teacher, FusionVLM):
        raise LightKDError(f"teacher must be a FusionVLM, got {type(teacher).__name__}")
    layers = spread(len(teacher.layers), n_layers)
    first = teacher.layers[0]
    student = FusionVLM(visual_dim, teacher.num_answers, vocab_size=teacher.word.num_embeddings,
                        hidden=teacher.hidden, layers=n_layers, heads=first.heads,
                        intermediate=first.ffn_in.out_features, max_positions=teacher.max_text)
    with torch.no_grad():
        for name in ("word", "position", "segment", "text_norm"):
            getattr(student, name).load_state_dict(getattr(teacher, name).state_dict())
        for mine, j in zip(student.layers, layers):
            mine.load_state_dict(teacher.layers[j - 1].state_dict())
    return student.to(model_device(teacher))  # built on the CPU (same init draws), then beside the teacher


def minivlm_from_pretrained(bert, visual_dim: int, num_answers: int, n_layers: int = 2) -> FusionVLM:
    """MiniVLM's student as the paper builds it: a small *pretrained*
    transformer (here ``n_layers`` of the pretrained BERT's layers, spread
    evenly, with its embeddings) that has not seen the task; only the
    teacher's lessons (distillation) or the labels teach it VQA."""
    if not hasattr(getattr(bert, "config", None), "num_hidden_layers"):
        raise LightKDError(f"bert must be a pretrained transformers BertModel (zoo.load_pretrained), got "
                           f"{type(bert).__name__}")
    n = bert.config.num_hidden_layers
    return FusionVLM.from_bert(bert, visual_dim, num_answers, layers=[j - 1 for j in spread(n, n_layers)])


class VLMPipeline(nn.Module):
    """Pixels to answers: a frozen extractor (pictures -> visual tokens),
    optionally pooled to a ``grid``, then the fusion model."""

    def __init__(self, extractor: nn.Module, fusion: FusionVLM, image_size: int = 64, grid: int | None = None):
        super().__init__()
        if not isinstance(fusion, FusionVLM):
            raise LightKDError(f"fusion must be a FusionVLM, got {type(fusion).__name__}")
        if not callable(extractor):
            raise LightKDError(f"extractor must turn pictures into visual tokens, got {type(extractor).__name__}")
        require_positive_int("image_size", image_size)
        if grid is not None:
            _check_side(grid, "grid")
        self.extractor, self.fusion, self.image_size, self.grid = extractor, fusion, image_size, grid

    def check_images(self, images) -> None:
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            raise LightKDError(f"images must be (batch, 3, {self.image_size}, {self.image_size}), "
                               f"got {getattr(images, 'shape', type(images).__name__)}")
        if images.shape[0] == 0:
            raise LightKDError("images is an empty batch")
        if images.shape[1] != 3:
            raise LightKDError(f"images must have 3 channels (RGB), got {images.shape[1]}")
        if tuple(images.shape[-2:]) != (self.image_size, self.image_size):
            raise LightKDError(f"images must be {self.image_size} x {self.image_size} pixels, "
                               f"got {tuple(images.shape[-2:])}")
        if not torch.isfinite(images).all():
            raise LightKDError("images hold NaN or inf")

    def visual_tokens(self, images: torch.Tensor) -> torch.Tensor:
        self.check_images(images)
        tokens = self.extractor(images)
        return tokens if self.grid is None else pool_tokens(tokens, self.grid)

    def forward(self, images, input_ids, attention_mask=None) -> ModelOutput:
        return self.fusion(self.visual_tokens(images), input_ids, attention_mask)


def time_breakdown(pipelines: dict, images: torch.Tensor, input_ids: torch.Tensor, attention_mask=None, *,
                   rounds: int = 20, warmup: int = 3, num_threads: int | None = None) -> dict:
    """Time every pipeline's extractor and fusion transformer apart, all
    round-robin (``bench.compare_latency``): {name: {"extractor": Latency,
    "transformer": Latency, "total": Latency}}; each total's speed-up is
    over the first pipeline's total (median of per-round ratios)."""
    from . import bench
    if not isinstance(pipelines, dict) or not pipelines:
        raise LightKDError("pipelines must be a non-empty dict {name: VLMPipeline}")
    require_tensor("input_ids", input_ids, dims=2)
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    models, inputs = {}, {}
    for name, pipe in pipelines.items():
        tokens = pipe.visual_tokens(images)
        models[f"{name}/total"] = pipe
        inputs[f"{name}/total"] = {"images": images, "input_ids": input_ids, "attention_mask": mask}
        models[f"{name}/extractor"] = pipe.extractor
        inputs[f"{name}/extractor"] = images
        models[f"{name}/transformer"] = pipe.fusion
        inputs[f"{name}/transformer"] = {"visual": tokens, "input_ids": input_ids, "attention_mask": mask}
    first = f"{next(iter(pipelines))}/total"
    lat = bench.compare_latency(models, inputs, reference=first, rounds=rounds, warmup=warmup,
                                num_threads=num_threads)
    return {name: {part: lat[f"{name}/{part}"] for part in ("extractor", "transformer", "total")}
            for name in pipelines}


# ------------------------------------------------------------ 4. data
def encode_questions(tokenizer, questions, max_length: int = MAX_QUESTION_TOKENS) -> dict:
    """Word pieces of every question, padded to the longest: input_ids and
    attention_mask (N, L). A question longer than ``max_length`` pieces
    ([CLS] and [SEP] included) is an error, not silently cut."""
    require_positive_int("max_length", max_length, minimum=2)  # [CLS] and [SEP] at least
    if isinstance(questions, str) or not hasattr(questions, "__len__"):
        raise LightKDError("questions must be a list of strings")
    if len(questions) == 0:
        raise LightKDError("questions is empty")
    if any(not isinstance(q, str) or not q.strip() for q in questions):
        raise LightKDError("questions must be non-empty strings")
    ids = tokenizer(list(questions), add_special_tokens=True)["input_ids"]
    longest = max(range(len(ids)), key=lambda i: len(ids[i]))
    if len(ids[longest]) > max_length:
        raise LightKDError(f"questions: {questions[longest]!r} is {len(ids[longest])} word pieces, more than "
                           f"max_length={max_length}")
    length = max(len(x) for x in ids)
    input_ids = torch.zeros(len(ids), length, dtype=torch.long)
    mask = torch.zeros(len(ids), length, dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, :len(x)] = torch.tensor(x)
        mask[i, :len(x)] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


def answer_ids(answer_names, answers) -> torch.Tensor:
    """Indices of answer words in the vocabulary; an unknown answer is an error."""
    if isinstance(answers, str) or not hasattr(answers, "__iter__"):
        raise LightKDError(f"answers must be a list of answer words, got {answers!r}")
    names = list(answer_names)
    bad = [a for a in answers if a not in names]
    if bad:
        raise LightKDError(f"answers: {bad[0]!r} is not in the answer vocabulary ({', '.join(names)})")
    return torch.tensor([names.index(a) for a in answers], dtype=torch.long)


class VQABatches:
    """Batches of questions over cached visual tokens: ``visual`` (the tokens
    of each question's picture), ``input_ids`` / ``attention_mask`` cut to the
    batch's longest question, ``labels``, ``index`` (row in the split) and,
    when given, the teacher's targets for the same rows (``targets``: a dict
    of (N, ...) tensors, batched under ``t_<name>``). Re-iterable; the order
    of epoch e is fixed by (seed, e) when shuffled."""

    def __init__(self, visual, image_index, input_ids, attention_mask, labels, *, batch_size: int = 32,
                 shuffle: bool = False, seed: int = 0, targets: dict | None = None):
        for name, t, dims in (("visual", visual, 3), ("image_index", image_index, 1), ("input_ids", input_ids, 2),
                              ("attention_mask", attention_mask, 2), ("labels", labels, 1)):
            require_tensor(name, t, dims=dims)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise LightKDError(f"seed must be an integer, got {seed!r}")
        n = len(labels)
        if n == 0:
            raise LightKDError("labels is empty: there are no questions to batch")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise LightKDError(f"batch_size must be a positive integer, got {batch_size!r}")
        for name, t in (("image_index", image_index), ("input_ids", input_ids), ("attention_mask", attention_mask)):
            if len(t) != n:
                raise LightKDError(f"{name} has {len(t)} rows but labels has {n}")
        if int(image_index.max()) >= len(visual) or int(image_index.min()) < 0:
            raise LightKDError(f"image_index points outside the {len(visual)} pictures of visual")
        for name, t in (targets or {}).items():
            if len(t) != n:
                raise LightKDError(f"targets[{name!r}] has {len(t)} rows but labels has {n}")
        self.visual, self.image_index, self.input_ids, self.attention_mask = visual, image_index, input_ids, attention_mask
        self.labels, self.batch_size, self.shuffle, self.seed = labels, batch_size, shuffle, seed
        self.targets, self.epoch = targets or {}, 0

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        n = len(self.labels)
        order = (torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 1000 + self.epoch))
                 if self.shuffle else torch.arange(n))
        for start in range(0, n, self.batch_size):
            rows = order[start:start + self.batch_size]
            length = int(self.attention_mask[rows].sum(1).max())
            batch = {"visual": self.visual[self.image_index[rows]], "input_ids": self.input_ids[rows, :length],
                     "attention_mask": self.attention_mask[rows, :length], "labels": self.labels[rows], "index": rows}
            for name, t in self.targets.items():
                batch[f"t_{name}"] = t[rows].float()
            yield batch


# ------------------------------------------------------------ 5. DistilVLM
def student_positions(teacher_visual: int, student_visual: int, text_length: int) -> torch.Tensor:
    """Which teacher tokens stand for the student's tokens, matched by index:
    the student's visual tokens 0..v-1 get the teacher's visual tokens
    0..v-1, the word pieces get the word pieces. With aligned tokens (same
    count) this is the identity; without, token i of the student and token i
    of the teacher cover different regions."""
    require_positive_int("teacher_visual", teacher_visual)
    require_positive_int("student_visual", student_visual)
    require_positive_int("text_length", text_length, minimum=0)
    if student_visual > teacher_visual:
        raise LightKDError(f"the student has more visual tokens ({student_visual}) than the teacher ({teacher_visual})")
    return torch.cat([torch.arange(student_visual), teacher_visual + torch.arange(text_length)])


@torch.no_grad()
def teacher_targets(teacher: FusionVLM, batches: VQABatches, student_visual: int, layers: list[int]) -> dict:
    """The teacher's outputs on every question of ``batches`` (its own visual
    tokens, or tokens aligned to the student's regions), put into the
    student's token layout [v visual][text, padded to the split's longest]:

    - ``logits`` (N, answers);
    - ``hidden`` (N, 1 + len(layers), S, H): the embedding output and the
      hidden states of teacher ``layers`` (1-based);
    - ``attention`` (N, len(layers), heads, S, S): those layers' attention,
      restricted to the student's positions and renormalised over them.
    Stored as float16."""
    if not isinstance(teacher, FusionVLM):
        raise LightKDError(f"teacher must be a FusionVLM, got {type(teacher).__name__}")
    if not isinstance(batches, VQABatches):
        raise LightKDError(f"batches must be VQABatches over every training question, got {type(batches).__name__}")
    require_positive_int("student_visual", student_visual)
    # 1-based: layer j is hidden_states[j]; 0 would pair the embeddings with the last layer's attention
    layers = require_indices("layers", layers, 1, len(teacher.layers))
    teacher.eval()
    device = model_device(teacher)
    length = batches.input_ids.shape[1]
    n = len(batches.labels)
    logits = hidden = attention = None
    for batch in batches:
        batch = to_device(batch, device)  # the targets themselves stay on the CPU, beside the batches' rows
        out = teacher(batch["visual"], batch["input_ids"], batch["attention_mask"],
                      output_hidden_states=True, output_attentions=True)
        t_visual, l = batch["visual"].shape[1], batch["input_ids"].shape[1]
        keep = student_positions(t_visual, student_visual, l).to(device)
        s = student_visual + length
        rows = batch["index"]
        if logits is None:
            heads = out.attentions[0].shape[1]
            logits = torch.zeros(n, out.logits.shape[1], dtype=torch.float16)
            hidden = torch.zeros(n, 1 + len(layers), s, teacher.hidden, dtype=torch.float16)
            attention = torch.zeros(n, len(layers), heads, s, s, dtype=torch.float16)
        logits[rows] = out.logits.half().cpu()
        states = torch.stack([out.hidden_states[0]] + [out.hidden_states[j] for j in layers], 1)[:, :, keep]
        hidden[rows, :, :len(keep)] = states.half().cpu()
        att = torch.stack([out.attentions[j - 1] for j in layers], 1)[:, :, :, keep][..., keep]
        att = att / att.sum(-1, keepdim=True).clamp_min(1e-12)
        attention[rows, :, :, :len(keep), :len(keep)] = att.half().cpu()
    return {"logits": logits, "hidden": hidden, "attention": attention}


UNLABELLED = -100  # the label of a question only the teacher answers (the transfer set)


def labelled_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the labelled questions of a batch (label != UNLABELLED); 0 when there are none."""
    require_tensor("logits", logits, dims=2, nonempty=False)
    require_tensor("labels", labels, dims=1, nonempty=False)
    labelled = labels != UNLABELLED
    if not labelled.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits[labelled], labels[labelled])


def distilvlm_loss(student_out: ModelOutput, batch: dict, *, temperature: float = 2.0, kd: float = 1.0,
                   hidden: float = 1.0, attention: float = 1.0) -> tuple[torch.Tensor, dict]:
    """DistilVLM's objective on one batch, token by token:

    cross-entropy with the labels (questions labelled ``UNLABELLED`` have
    none: they are the transfer set) + ``kd`` * T^2 KL(teacher || student) at
    temperature T + ``hidden`` * MSE of the embedding output and the matched
    layers' hidden states + ``attention`` * squared error of the matched
    layers' attention rows (summed over keys, averaged over heads and real
    tokens). The teacher's part comes from ``teacher_targets`` through the
    batch (``t_logits``, ``t_hidden``, ``t_attention``)."""
    require_temperature("temperature", temperature)
    for name, weight in (("kd", kd), ("hidden", hidden), ("attention", attention)):
        require_weight(name, weight)
    if not isinstance(batch, dict) or not all(k in batch for k in ("labels", "visual", "input_ids", "attention_mask")):
        raise LightKDError("batch must be one of VQABatches' batches (labels, visual, input_ids, attention_mask)")
    require_tensor("batch['labels']", batch["labels"], dims=1)
    labels = batch["labels"]
    logits = student_out.logits
    ce = labelled_cross_entropy(logits, labels)
    if not all(k in batch for k in ("t_logits", "t_hidden", "t_attention")):
        raise LightKDError("batch has no teacher targets (t_logits, t_hidden, t_attention): build the batches "
                           "with targets=teacher_targets(...)")
    if student_out.hidden_states is None or student_out.attentions is None:
        raise LightKDError("run the student with output_hidden_states=True and output_attentions=True")
    t_layers = batch["t_hidden"].shape[1] - 1
    if len(student_out.hidden_states) != t_layers + 1 or len(student_out.attentions) != t_layers:
        raise LightKDError(f"the teacher targets hold {t_layers} layer(s) (t_hidden) but the student has "
                           f"{len(student_out.attentions)}: build them with one teacher layer per student layer")
    if batch["t_hidden"].shape[-1] != student_out.hidden_states[0].shape[-1] or \
            batch["t_attention"].shape[2] != student_out.attentions[0].shape[1]:
        raise LightKDError(f"t_hidden / t_attention ({tuple(batch['t_hidden'].shape)}, "
                           f"{tuple(batch['t_attention'].shape)}) do not match the student's width and heads")
    v = batch["visual"].shape[1]
    s = v + batch["input_ids"].shape[1]
    mask = torch.cat([torch.ones(len(labels), v, device=labels.device),
                      batch["attention_mask"].float()], 1)                                 # (B, S) real tokens
    t = temperature
    kl = F.kl_div(F.log_softmax(logits / t, -1), F.softmax(batch["t_logits"] / t, -1), reduction="batchmean") * t * t
    s_hidden = torch.stack(student_out.hidden_states, 1)                                   # (B, 1+L, S, H)
    t_hidden = batch["t_hidden"][:, :, :s]
    per_token = (s_hidden - t_hidden).pow(2).mean(-1)                                      # (B, 1+L, S)
    hid = (per_token * mask[:, None]).sum() / (mask.sum() * s_hidden.shape[1])
    s_att = torch.stack(student_out.attentions, 1)                                         # (B, L, heads, S, S)
    t_att = batch["t_attention"][..., :s, :s]
    rows = (s_att - t_att).pow(2).sum(-1)                                                  # (B, L, heads, S)
    att = (rows * mask[:, None, None]).sum() / (mask.sum() * rows.shape[1] * rows.shape[2])
    total = ce + kd * kl + hidden * hid + attention * att
    return total, {"ce": ce.item(), "kd": kl.item(), "hidden": hid.item(), "attention": att.item()}


LOSS_WEIGHTS = ("temperature", "kd", "hidden", "attention")  # what distilvlm_loss takes besides the batch


def _require_loss_weights(weights: dict) -> None:
    unknown = sorted(set(weights) - set(LOSS_WEIGHTS))
    if unknown:
        raise LightKDError(f"unknown loss weight {unknown[0]!r}; distilvlm_loss takes {', '.join(LOSS_WEIGHTS)}")
    if "temperature" in weights:
        require_temperature("temperature", weights["temperature"])
    for name in ("kd", "hidden", "attention"):
        if name in weights:
            require_weight(name, weights[name])


def vqa_loss(model: FusionVLM, batch: dict, mode: str = "labels", **weights) -> tuple[torch.Tensor, dict]:
    """The training loss of one arm: ``labels`` (cross-entropy only) or a
    distillation arm (``unaligned`` / ``aligned``: the batches carry the
    matching teacher targets)."""
    if mode not in MODES:
        raise LightKDError(f"unknown mode {mode!r}; choose one of {', '.join(map(repr, MODES))}")
    _require_loss_weights(weights)
    if not isinstance(batch, dict) or not all(k in batch for k in ("visual", "input_ids", "attention_mask", "labels")):
        raise LightKDError("batch must be one of VQABatches' batches (visual, input_ids, attention_mask, labels)")
    distil = mode != "labels"
    out = model(batch["visual"], batch["input_ids"], batch["attention_mask"],
                output_hidden_states=distil, output_attentions=distil)
    if not distil:
        ce = labelled_cross_entropy(out.logits, batch["labels"])
        return ce, {"ce": ce.item()}
    return distilvlm_loss(out, batch, **weights)


def arm_loss(mode: str = "labels", **weights):
    """``vqa_loss`` of one arm as a named function ``loss(model, batch)``
    (for ``train.fit``; the name, which holds the weights, joins a cache key)."""
    if mode not in MODES:
        raise LightKDError(f"unknown mode {mode!r}; choose one of {', '.join(map(repr, MODES))}")
    _require_loss_weights(weights)

    def loss(model, batch):
        return vqa_loss(model, batch, mode, **weights)
    loss.__name__ = "vqa_loss_" + mode + "".join(f"_{k}{v}" for k, v in sorted(weights.items()))
    return loss


# ------------------------------------------------------------ 6. retrieval: a dual encoder
def _check_features(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or len(x) == 0:
        raise LightKDError(f"{name} must be a non-empty (items, features) tensor, got "
                           f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if not torch.isfinite(x).all():
        raise LightKDError(f"{name} holds NaN or infinite values")
    return x


def text_features(bert, tokenizer, texts, layers: int, *, data: str | None, batch_size: int = 256) -> torch.Tensor:
    """Each text as one vector: the mean of its word pieces' hidden states
    after the first ``layers`` layers of ``bert`` (frozen; sentence-transformers'
    mean pooling). Computed once and cached under ``data`` (a name for the
    texts; a hash of the texts joins the key); ``data=None`` computes without
    caching (a typed query)."""
    import hashlib
    from . import zoo
    if isinstance(texts, str) or not hasattr(texts, "__iter__"):
        raise LightKDError("texts must be a non-empty list of non-empty strings")
    texts = list(texts)
    if not texts or not all(isinstance(t, str) and t for t in texts):
        raise LightKDError("texts must be a non-empty list of non-empty strings")
    require_positive_int("batch_size", batch_size)
    depth = bert.config.num_hidden_layers
    if isinstance(layers, bool) or not isinstance(layers, int) or not 1 <= layers <= depth:
        raise LightKDError(f"layers must be an integer in 1..{depth} (the model's depth), got {layers!r}")
    spec = {"model": bert.config.name_or_path or "bert", "width": bert.config.hidden_size, "layers": layers,
            "data": data, "n": len(texts), "texts": hashlib.sha1("\n".join(texts).encode()).hexdigest()[:16],
            "weights": float(sum(p.detach().double().sum() for p in bert.parameters())), "version": 1}

    def compute():
        bert.eval()
        out = []
        with torch.inference_mode():
            for s in range(0, len(texts), batch_size):
                enc = tokenizer(texts[s:s + batch_size], padding=True, return_tensors="pt")
                hidden = bert(**enc, output_hidden_states=True).hidden_states[layers]
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                out.append((hidden * mask).sum(1) / mask.sum(1))
        return {"features": torch.cat(out)}, {}

    if data is None:
        return compute()[0]["features"]
    if not isinstance(data, str) or not data:
        raise LightKDError(f"data must name the texts (a non-empty string) or be None, got {data!r}")
    tensors, _ = zoo.cached_tensors("vlm-text-features", spec, compute)
    return tensors["features"]


class DualEncoder(nn.Module):
    """Pictures and texts embedded apart, compared by cosine similarity: a
    LayerNorm + linear head on each side's frozen features into a shared
    ``dim``-wide space, and CLIP's learned temperature (``logit_scale``, the
    log of 1 / temperature, starting at 1 / 0.07). ``forward`` returns the
    unit-length embeddings ``(images, texts)``; ``scores`` the scaled
    similarity of every text with every picture."""

    def __init__(self, image_dim: int, text_dim: int, dim: int = 256):
        super().__init__()
        for name, v in (("image_dim", image_dim), ("text_dim", text_dim), ("dim", dim)):
            require_positive_int(name, v)
        self.image_head = nn.Sequential(nn.LayerNorm(image_dim), nn.Linear(image_dim, dim))
        self.text_head = nn.Sequential(nn.LayerNorm(text_dim), nn.Linear(text_dim, dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor):
        return (F.normalize(self.image_head(image_features), dim=-1),
                F.normalize(self.text_head(text_features), dim=-1))

    def scores(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """(texts, pictures) similarities times the learned scale (capped at 100, as CLIP does)."""
        images, texts = self(image_features, text_features)
        return self.logit_scale.exp().clamp(max=100) * texts @ images.T


def contrastive_loss(scores: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE: text i should pick picture i among the batch's
    pictures, and picture i text i (the mean of the two cross-entropies)."""
    require_tensor("scores", scores, dims=2)
    if scores.shape[0] != scores.shape[1]:
        raise LightKDError(f"scores must be square (texts x pictures, pair i on the diagonal), got {tuple(scores.shape)}")
    target = torch.arange(len(scores), device=scores.device)
    return (F.cross_entropy(scores, target) + F.cross_entropy(scores.T, target)) / 2


def similarity_kd_loss(student_scores: torch.Tensor, teacher_scores: torch.Tensor,
                       temperature: float = 1.0) -> torch.Tensor:
    """The teacher's image-text scores over the batch as soft targets, in
    both directions (text to pictures, picture to texts): KL(teacher ||
    student) at ``temperature``, times T^2 as in Hinton et al."""
    require_tensor("student_scores", student_scores, dims=2)
    require_tensor("teacher_scores", teacher_scores, dims=2)
    require_temperature("temperature", temperature)
    if min(student_scores.shape) < 2:
        raise LightKDError(f"student_scores must compare at least two texts with two pictures, got "
                           f"{tuple(student_scores.shape)}: one candidate leaves nothing to rank")
    if student_scores.shape != teacher_scores.shape:
        raise LightKDError(f"student and teacher scores must have one shape, got {tuple(student_scores.shape)} "
                           f"and {tuple(teacher_scores.shape)}")
    return (distill.soft_target_loss(student_scores, teacher_scores, temperature) +
            distill.soft_target_loss(student_scores.T, teacher_scores.T, temperature)) / 2


def train_dual(image_features: torch.Tensor, text_features: torch.Tensor, *, steps: int = 300,
               batch_size: int = 128, lr: float = 1e-3, seed: int = 0, dim: int = 256, teacher=None,
               kd: float = 0.0, temperature: float = 1.0) -> DualEncoder:
    """A ``DualEncoder`` trained on matching (picture, text) pairs, row i with
    row i, by ``contrastive_loss`` on random batches. With a ``teacher`` =
    (trained DualEncoder, its image features, its text features) for the same
    rows, the loss is (1 - kd) x contrastive + kd x ``similarity_kd_loss``."""
    images, texts = _check_features(image_features, "image_features"), _check_features(text_features, "text_features")
    if len(images) != len(texts):
        raise LightKDError(f"image_features and text_features must have one row per pair, got {len(images)} "
                           f"and {len(texts)}")
    if not isinstance(batch_size, int) or not 2 <= batch_size:
        raise LightKDError(f"batch_size must be an integer >= 2 (a batch is its own negatives), got {batch_size!r}")
    if not isinstance(steps, int) or steps < 1:
        raise LightKDError(f"steps must be a positive integer, got {steps!r}")
    require_number("lr", lr, low=0, low_open=True)
    require_temperature("temperature", temperature)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise LightKDError(f"seed must be an integer, got {seed!r}")
    if teacher is not None and (not isinstance(teacher, (tuple, list)) or len(teacher) != 3):
        raise LightKDError("teacher must be (trained DualEncoder, its image features, its text features)")
    if isinstance(kd, bool) or not isinstance(kd, (int, float)) or not 0.0 <= kd <= 1.0 or (kd > 0 and teacher is None):
        raise LightKDError(f"kd must be in [0, 1] and needs a teacher, got kd={kd!r} with "
                           f"{'no' if teacher is None else 'a'} teacher")
    if teacher is not None:
        t_model, t_images, t_texts = teacher
        if len(t_images) != len(images) or len(t_texts) != len(texts):
            raise LightKDError("the teacher's features must cover the same pairs as the student's")
    torch.manual_seed(seed)
    model = DualEncoder(images.shape[1], texts.shape[1], dim)
    order = torch.Generator().manual_seed(seed)
    batches = [{"rows": torch.randperm(len(images), generator=order)[:batch_size]} for _ in range(steps)]

    def loss(model, batch):
        rows = batch["rows"]
        scores = model.scores(images[rows], texts[rows])
        value = contrastive_loss(scores)
        if teacher is not None and kd > 0:
            with torch.no_grad():
                t_scores = t_model.scores(t_images[rows], t_texts[rows])
            value = (1 - kd) * value + kd * similarity_kd_loss(scores, t_scores, temperature)
        return value, {"loss": value.detach()}

    # A constant learning rate, weight decay on every weight, no clipping, fp32: a small
    # head on stored features, which train.fit's defaults (warm-up and decay, bf16) are not for.
    fit(model, batches, max_steps=steps, optimizer=torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1),
        lr_lambda=lambda step: 1.0, grad_clip=None, bf16=False, seed=seed, progress=False, loss=loss)
    return model.eval()


def retrieval_ranks(model: DualEncoder, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """For each text i, the rank of its own picture i among all pictures by
    similarity (0 = first; ties counted against it)."""
    images, texts = _check_features(image_features, "image_features"), _check_features(text_features, "text_features")
    if len(images) != len(texts):
        raise LightKDError(f"need one picture per text, got {len(images)} pictures and {len(texts)} texts")
    with torch.no_grad():
        scores = model.scores(images, texts)
    return (scores >= scores.diag()[:, None]).sum(1) - 1


def recall_at(ranks: torch.Tensor, k: int) -> torch.Tensor:
    """Per text, 1.0 where its picture is among the top ``k`` (R@k's items)."""
    if not isinstance(k, int) or k < 1:
        raise LightKDError(f"k must be a positive integer, got {k!r}")
    return (ranks < k).float()


# ------------------------------------------------------------ 7. exercise checks
def _grid_inputs(rng: random.Random):
    side = rng.choice([1, 2, 3])
    factor = rng.choice([1, 2, 3])
    return torch.randn(rng.randrange(1, 4), (side * factor) ** 2, rng.randrange(1, 6)), side


def check_pool_tokens(candidate, trials: int = 20, seed: int | None = None) -> bool:
    """Exercise: write ``pool_tokens(tokens, side)`` (a grid of tokens averaged into a coarser grid)."""
    from .exercises import check_function
    return check_function(candidate, pool_tokens, _grid_inputs, trials=trials, seed=seed, name="pool_tokens")


def check_student_positions(candidate, trials: int = 20, seed: int | None = None) -> bool:
    """Exercise: write ``student_positions(teacher_visual, student_visual, text_length)``."""
    from .exercises import check_function

    def make(rng):
        sv = rng.randrange(1, 10)
        return sv + rng.randrange(0, 20), sv, rng.randrange(1, 12)
    return check_function(candidate, student_positions, make, trials=trials, seed=seed, name="student_positions")
