"""The encoder being fine-tuned: a transformers model with attention-mask mean pooling and L2
normalisation (what the exported graph computes), its tokenizer and the prefixes it was trained
with; loaded lazily so `--help` and the input checks never import torch."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:  # torch is imported lazily: `--help` and the input checks stay instant
    import torch

# The served encoder truncates at 128 tokens; dev evaluation embeds like the served model does,
# so the dev numbers are the exported model's numbers.
EVAL_MAX_LENGTH = 128


EVAL_BATCH_SIZE = 128


def mean_pooled(model, input_ids: "torch.Tensor", attention_mask: "torch.Tensor") -> "torch.Tensor":
    """Exactly the exported graph's computation (training.encoders.export's wrapper): token_type_ids
    zero, attention-mask mean pooling of the last hidden state, L2 normalisation."""
    import torch

    outputs = model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=torch.zeros_like(input_ids))
    token_embeddings = outputs.last_hidden_state
    mask = attention_mask.unsqueeze(-1).to(token_embeddings.dtype)
    summed = (token_embeddings * mask).sum(dim=1)
    counts = mask.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(summed / counts, p=2.0, dim=1)


@dataclass
class Encoder:
    """A transformers encoder, its tokenizer and the prefixes its queries and passages get."""

    model: object
    tokenizer: object
    query_prefix: str = ""
    passage_prefix: str = ""

    def _prefixed(self, texts: Sequence[str], kind: str) -> list[str]:
        prefix = self.query_prefix if kind == "query" else self.passage_prefix
        return [prefix + text for text in texts]

    def embed(self, texts: Sequence[str], kind: str, max_length: int) -> "torch.Tensor":
        """Embeddings with gradients (training)."""
        encoded = self.tokenizer(self._prefixed(texts, kind), padding=True, truncation=True,
                                 max_length=max_length, return_tensors="pt")
        return mean_pooled(self.model, encoded["input_ids"], encoded["attention_mask"])

    def encode(self, texts: Sequence[str], kind: str, max_length: int = EVAL_MAX_LENGTH,
               batch_size: int = EVAL_BATCH_SIZE, desc: str | None = None) -> "torch.Tensor":
        """Embeddings without gradients, in eval mode; batches of similar lengths pad little."""
        import torch
        from tqdm import tqdm

        was_training = self.model.training
        self.model.eval()
        prefixed = self._prefixed(texts, kind)
        order = sorted(range(len(prefixed)), key=lambda i: len(prefixed[i]))
        out = torch.empty((len(prefixed), self.model.config.hidden_size))
        try:
            with torch.no_grad(), tqdm(total=len(prefixed), desc=desc or f"encode {kind}s", unit="text",
                                       leave=False, file=sys.stderr, disable=desc is None or not sys.stderr.isatty()) as bar:
                for start in range(0, len(order), batch_size):
                    rows = order[start:start + batch_size]
                    encoded = self.tokenizer([prefixed[i] for i in rows], padding=True, truncation=True,
                                             max_length=max_length, return_tensors="pt")
                    out[rows] = mean_pooled(self.model, encoded["input_ids"], encoded["attention_mask"])
                    bar.update(len(rows))
        finally:
            self.model.train(was_training)
        return out


def load_encoder(base_dir: Path, query_prefix: str, passage_prefix: str) -> Encoder:
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    try:
        # Mean pooling never reads BERT's pooler; without it nothing untrained is saved (e5
        # ships no pooler weights) and LoRA puts no adapter on pooler.dense.
        model = AutoModel.from_pretrained(str(base_dir), dtype=torch.float32, add_pooling_layer=False)
    except TypeError:  # an architecture without a pooler option
        model = AutoModel.from_pretrained(str(base_dir), dtype=torch.float32)
    return Encoder(model, tokenizer, query_prefix, passage_prefix)


def finished_model(encoder: Encoder):
    """The plain transformers model to save: LoRA adapters merged into the weights."""
    if hasattr(encoder.model, "merge_and_unload"):
        return encoder.model.merge_and_unload()
    return encoder.model
