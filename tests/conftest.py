import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LIGHTKD_PROGRESS", "0")


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    """An empty lightkd cache for one test."""
    monkeypatch.setenv("LIGHTKD_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def make_tiny_bert(layers=4, hidden=32, heads=4, vocab=100, labels=2, seed=0, attn="eager"):
    """A transformers BERT classifier small enough to run in milliseconds."""
    from transformers import BertConfig, BertForSequenceClassification
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=2 * hidden, max_position_embeddings=64, num_labels=labels,
                        attn_implementation=attn)
    return BertForSequenceClassification(config).eval()


def make_tiny_batch(b=3, n=7, vocab=100, labels=2, seed=0):
    """A text batch with one padded sentence, labels and indices."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (b, n), generator=g)
    mask = torch.ones(b, n, dtype=torch.long)
    mask[0, n - 3:] = 0
    ids[0, n - 3:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.randint(0, labels, (b,), generator=g),
            "index": torch.arange(b)}


@pytest.fixture
def tiny_bert():
    """``tiny_bert(layers=4, hidden=32, ...)`` builds a tiny BERT classifier."""
    return make_tiny_bert


@pytest.fixture
def tiny_batch():
    """``tiny_batch(b=3, n=7, ...)`` builds a matching text batch."""
    return make_tiny_batch
