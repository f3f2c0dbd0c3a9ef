"""Train a tiny BERT for a few steps with train.fit and save its final weights (rank 0).

    python tools/dp_check.py OUT.pt                       # one process
    accelerate launch --cpu --num_processes 2 --num_machines 1 --mixed_precision no \\
        --dynamo_backend no --main_process_port PORT tools/dp_check.py OUT.pt   # data parallel

tests/test_accelerate.py compares the two: the same model up to floating-point tolerance.
Dropout is off (each process draws its own masks), and the last batch has an odd
number of rows, so the two shards differ in size.
"""
import os
import sys

import torch

os.environ.setdefault("LIGHTKD_PROGRESS", "0")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from lightkd import train  # noqa: E402


class Batches:
    """Re-iterable text batches: 13 rows, batches of 6 (6, 6, 1), shuffled by epoch."""

    def __init__(self, n=13, size=6, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(5, 100, (n, 9), generator=g)
        self.mask = torch.ones(n, 9, dtype=torch.long)
        self.mask[::3, 6:] = 0
        self.labels = torch.randint(0, 2, (n,), generator=g)
        self.size, self.epoch = size, 0

    def __len__(self):
        return -(-len(self.labels) // self.size)

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        order = torch.randperm(len(self.labels), generator=torch.Generator().manual_seed(self.epoch))
        for s in range(0, len(order), self.size):
            rows = order[s:s + self.size]
            yield {"input_ids": self.ids[rows], "attention_mask": self.mask[rows], "labels": self.labels[rows],
                   "index": rows}


def main(out):
    from transformers import BertConfig, BertForSequenceClassification
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    result = train.fit(model, Batches(), Batches(seed=1), epochs=2, lr=1e-3, bf16=False, seed=0, eval_every=3,
                       progress=False, log_every=1)
    if train.world_size() == 1 or int(os.environ.get("RANK", "0")) == 0:
        torch.save({"state": model.state_dict(), "history": result.history, "evals": result.evals,
                    "world": train.world_size(), "type": type(model).__name__}, out)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1])
