"""The sequential recommender: a SASRec-style causal transformer over a user's recent items.

One table of item vectors serves both ends of the model (weight tying, as in SASRec), unless
``ModelConfig.untied_output`` (then see ``scoring_vectors``):

- ``item_vectors()`` [num_items + 1, dim], row 0 (padding) all zeros, is the sum of a learned
  ID embedding, the mean of the item's attribute embeddings (brand/category ids, when given)
  and ``Linear(content_dim, dim)`` of fixed content features (e.g. text-encoder vectors, when
  given);
- the sequence encoder reads the vectors of the history, right-aligned in ``max_length`` slots
  (newest item in the last slot, padding on the left), adds a positional embedding, runs causal
  self-attention blocks and returns the last slot's output as the user vector. Two settings of
  ``ModelConfig`` shape it: ``positions`` = "end" (one position per window slot, counted from the
  newest item) or "start" (counted from the oldest item in the window, as RecBole's SASRec
  does); ``block`` = "pre" (pre-LayerNorm blocks, item input scaled by sqrt(dim), a final
  LayerNorm) or "post" (RecBole/BERT-style: LayerNorm + dropout on the item + position sum, no
  scaling, post-LayerNorm blocks without dropout inside the feed-forward layer);
- score(user, item) = dot(user vector, item vector). With ``untied_output`` the item side of
  the score is ``scoring_vectors()``: the item vector plus a learned per-item correction of its
  ID part (zero at the start). Tied, the user vector after a history ending in item i points
  at i's own vector, so i outranks what comes next for most shoppers whenever history items
  are left in the ranking; the correction lets the model score an item differently from how
  it reads it. New items (content or attribute vectors only) are the same at both ends.

Training (``training.rec.train_rec``) uses full softmax cross-entropy over all items at every
position. ID dropout: with probability ``id_dropout`` an item's ID-embedding part is zeroed for
a whole batch (in the history and in the scoring table alike), so the attribute/content part
alone has to be a usable vector: that is what a new item, never seen in training, gets
(``content_vectors``). The full vector is not rescaled at inference.

Serving gets the user encoder alone as ONNX (``export_user_encoder``): inputs ``history`` FP32
[batch, 50, 64] (the item vectors of the history, looked up by the caller from
``item_vectors()``; zeros in padding slots) and ``history_mask`` FP32 [batch, 50] (1 = real
item), output ``user_vector`` FP32 [batch, 64], which retrieval scores against
``scoring_vectors()`` (``training.rec.rec_catalog`` exports both tables).

Attention masking: a slot may attend to itself and to earlier real items. Letting every slot
see itself keeps every attention row non-empty, so the left padding of a short history (whose
rows would otherwise be fully masked, the classic source of NaN) stays finite; the last slot,
the only one read, never attends to padding.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from training.onnx_export import TorchGraph, export_torch

NEG = -1e9  # additive mask: large and finite, so no row of the softmax ever becomes NaN


@dataclass
class ModelConfig:
    num_items: int
    num_attributes: int = 0
    content_dim: int = 0
    dim: int = 64
    max_length: int = 50
    num_layers: int = 2
    num_heads: int = 2
    dropout: float = 0.5
    attention_dropout: float = 0.5
    id_dropout: float = 0.1
    # "pre": pre-LayerNorm blocks, item input scaled by sqrt(dim), a final LayerNorm;
    # "post": RecBole/BERT-style post-LayerNorm blocks, LayerNorm + dropout on the sum of item
    # and position embeddings, no sqrt(dim) scaling, no final LayerNorm.
    block: str = "pre"
    # "end": a position per window slot (the newest item always in the last one);
    # "start": positions counted from the oldest item in the window (0, 1, ...), as RecBole does.
    positions: str = "end"
    # False: one table of item vectors is both the history input and the scoring table (SASRec's
    # weight tying). True: the scoring table adds a learned per-item correction to the ID part
    # (`output_embedding`, zero at the start, so training starts tied), so an item's input
    # vector need not score the item itself highly.
    untied_output: bool = False

    def to_json(self) -> dict:
        return asdict(self)


class _Block(nn.Module):
    """Transformer block, pre-LayerNorm (or post-LayerNorm with `post_norm`), with an explicit
    additive attention mask (plain matmuls: exports to ONNX as ordinary MatMul/Softmax nodes)."""

    def __init__(self, dim: int, heads: int, dropout: float, attention_dropout: float, post_norm: bool = False):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {heads}")
        self.post_norm = post_norm
        self.heads = heads
        self.head_dim = dim // heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        # Post-LN (RecBole's feed-forward) has no dropout between the two layers.
        inner_drop = nn.Identity() if post_norm else nn.Dropout(dropout)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), inner_drop, nn.Linear(4 * dim, dim))
        self.attn_drop = nn.Dropout(attention_dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        qkv = self.qkv(x if self.post_norm else self.norm1(x))
        q, k, v = qkv.view(batch, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.head_dim) + bias, dim=-1)
        attended = (self.attn_drop(weights) @ v).transpose(1, 2).reshape(batch, length, dim)
        if self.post_norm:
            x = self.norm1(x + self.drop(self.out(attended)))
            return self.norm2(x + self.drop(self.ff(x)))
        x = x + self.drop(self.out(attended))
        return x + self.drop(self.ff(self.norm2(x)))


class SequentialRecommender(nn.Module):
    def __init__(self, config: ModelConfig, attributes: list[list[int]] | None = None,
                 content: np.ndarray | None = None):
        super().__init__()
        if config.block not in ("pre", "post"):
            raise ValueError(f"block must be 'pre' or 'post', not {config.block!r}")
        if config.positions not in ("end", "start"):
            raise ValueError(f"positions must be 'end' or 'start', not {config.positions!r}")
        self.config = config
        n, dim = config.num_items, config.dim
        post = config.block == "post"
        self.item_embedding = nn.Embedding(n + 1, dim, padding_idx=0)
        self.output_embedding = nn.Embedding(n + 1, dim, padding_idx=0) if config.untied_output else None
        self.position_embedding = nn.Embedding(config.max_length, dim)
        # Attributes: a padded [n + 1, max_attributes] index (0 = none) and the count per item.
        if config.num_attributes > 0:
            if attributes is None:
                attributes = [[] for _ in range(n + 1)]
            width = max(1, max(len(a) for a in attributes))
            index = torch.zeros(n + 1, width, dtype=torch.long)
            for item, values in enumerate(attributes[: n + 1]):
                if item and values:
                    index[item, : len(values)] = torch.tensor(values, dtype=torch.long)
            self.attribute_embedding = nn.Embedding(config.num_attributes + 1, dim, padding_idx=0)
            self.register_buffer("attribute_index", index)
            self.register_buffer("attribute_count", (index > 0).sum(1, keepdim=True).clamp(min=1).float())
        else:
            self.attribute_embedding = None
        if config.content_dim > 0:
            if content is None:
                content = np.zeros((n + 1, config.content_dim), dtype=np.float32)
            if content.shape != (n + 1, config.content_dim):
                raise ValueError(f"content must be [{n + 1}, {config.content_dim}], got {list(content.shape)}")
            self.content_projection_layer = nn.Linear(config.content_dim, dim)
            self.register_buffer("content", torch.as_tensor(np.asarray(content, dtype=np.float32)))
        else:
            self.content_projection_layer = None
        row_mask = torch.ones(n + 1, 1)
        row_mask[0] = 0
        self.register_buffer("row_mask", row_mask)
        self.input_dropout = nn.Dropout(config.dropout)
        self.input_norm = nn.LayerNorm(dim) if post else nn.Identity()
        self.blocks = nn.ModuleList(
            _Block(dim, config.num_heads, config.dropout, config.attention_dropout, post)
            for _ in range(config.num_layers)
        )
        self.final_norm = nn.Identity() if post else nn.LayerNorm(dim)
        slots = torch.arange(config.max_length)
        self.register_buffer("causal", slots[None, :] <= slots[:, None])   # [query, key]
        self.register_buffer("diagonal", slots[None, :] == slots[:, None])
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.zeros_(module.bias)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
            if self.output_embedding is not None:
                self.output_embedding.weight.zero_()
            if self.attribute_embedding is not None:
                self.attribute_embedding.weight[0].zero_()

    # ------------------------------------------------------------------ item vectors

    def side_vectors(self) -> torch.Tensor:
        """[num_items + 1, dim]: the attribute and content part of every item vector."""
        n, dim = self.config.num_items, self.config.dim
        side = torch.zeros(n + 1, dim, device=self.row_mask.device)
        if self.attribute_embedding is not None:
            side = side + self.attribute_embedding(self.attribute_index).sum(1) / self.attribute_count
        if self.content_projection_layer is not None:
            side = side + self.content_projection_layer(self.content)
        return side

    def item_vectors(self, id_keep: torch.Tensor | None = None) -> torch.Tensor:
        """[num_items + 1, dim], row 0 zeros. `id_keep` [num_items + 1] (0/1) zeroes the ID part
        of some items (ID dropout during training)."""
        return self.item_tables(id_keep)[0]

    def scoring_vectors(self, id_keep: torch.Tensor | None = None) -> torch.Tensor:
        """[num_items + 1, dim]: the table users are scored against; `item_vectors` itself
        unless the model has an untied output table (then its ID part plus the correction)."""
        return self.item_tables(id_keep)[1]

    def item_tables(self, id_keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(`item_vectors`, `scoring_vectors`) with the side part computed once; the same tensor
        twice for a tied model."""
        side = self.side_vectors()

        def table(ids: torch.Tensor) -> torch.Tensor:
            if id_keep is not None:
                ids = ids * id_keep[:, None]
            return (ids + side) * self.row_mask

        inputs = table(self.item_embedding.weight)
        if self.output_embedding is None:
            return inputs, inputs
        return inputs, table(self.item_embedding.weight + self.output_embedding.weight)

    def sample_id_keep(self) -> torch.Tensor | None:
        if not self.training or self.config.id_dropout <= 0:
            return None
        keep = torch.rand(self.config.num_items + 1, device=self.row_mask.device) >= self.config.id_dropout
        return keep.float()

    def content_projection(self) -> tuple[np.ndarray, np.ndarray]:
        """(W [content_dim, dim], b [dim]) as numpy: content-only vector = content @ W + b."""
        if self.content_projection_layer is None:
            raise ValueError("this model was trained without content features")
        layer = self.content_projection_layer
        return (layer.weight.detach().cpu().numpy().T.copy(), layer.bias.detach().cpu().numpy().copy())

    def content_vectors(self, content: np.ndarray) -> np.ndarray:
        """Vectors for items known only by their content features (new items): content @ W + b."""
        weight, bias = self.content_projection()
        return (np.asarray(content, dtype=np.float32) @ weight + bias).astype(np.float32)

    def attribute_vectors(self, attributes: list[list[int]]) -> np.ndarray:
        """Vectors for items known only by their attribute ids (new items without content):
        the mean of their attribute embeddings, zeros for an item without known attributes.
        Ids outside 1..num_attributes are ignored."""
        vectors = np.zeros((len(attributes), self.config.dim), dtype=np.float32)
        if self.attribute_embedding is None:
            return vectors
        table = self.attribute_embedding.weight.detach().cpu().numpy()
        for row, values in enumerate(attributes):
            known = [v for v in set(values) if 1 <= v <= self.config.num_attributes]
            if known:
                vectors[row] = table[known].mean(axis=0)
        return vectors

    # --------------------------------------------------------------- sequence encoder

    def sequence_output(self, history_vectors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, W, dim] outputs of every slot for right-aligned histories [B, W, dim] with mask
        [B, W] (1 = real item), W <= max_length; the window's last W slots' positions."""
        width = history_vectors.shape[1]
        start = self.config.max_length - width
        mask = mask.to(history_vectors.dtype)
        if self.config.positions == "start":
            # The oldest real item in the window is position 0; padding (zeroed below) gets 0 too.
            positions = self.position_embedding((torch.cumsum(mask, dim=1) - 1).clamp(min=0).long())
        else:
            positions = self.position_embedding.weight[start:]
        if self.config.block == "post":
            x = self.input_norm(history_vectors + positions)
        else:
            x = history_vectors * math.sqrt(self.config.dim) + positions
        x = self.input_dropout(x) * mask.unsqueeze(-1)
        allowed = self.causal[start:, start:] & ((mask[:, None, :] > 0.5) | self.diagonal[start:, start:])
        bias = torch.where(allowed, 0.0, NEG).unsqueeze(1).to(x.dtype)   # [B, 1, W, W]
        for block in self.blocks:
            x = block(x, bias)
        return self.final_norm(x)

    def encode_history(self, history_vectors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """User vectors [B, dim]: the last slot's output."""
        return self.sequence_output(history_vectors, mask)[:, -1]

    def encode_ids(self, history_ids: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
        """User vectors for right-aligned item-id windows [B, W] (0 = padding)."""
        table = self.item_vectors() if table is None else table
        return self.encode_history(table[history_ids], (history_ids > 0).float())


class UserEncoder(nn.Module):
    """The served part: (history vectors, mask) -> user vector."""

    def __init__(self, model: SequentialRecommender):
        super().__init__()
        self.model = model

    def forward(self, history: torch.Tensor, history_mask: torch.Tensor) -> torch.Tensor:
        return self.model.encode_history(history, history_mask)


def export_user_encoder(model: SequentialRecommender, path: Path) -> None:
    """ONNX of the user encoder: `history` [batch, max_length, dim], `history_mask`
    [batch, max_length] -> `user_vector` [batch, dim]; only the batch dimension is dynamic."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    try:
        config = model.config
        example = (torch.zeros(2, config.max_length, config.dim), torch.ones(2, config.max_length))
        batch = torch.export.Dim("batch", min=1, max=4096)
        export_torch(UserEncoder(model).eval(), example, path, TorchGraph(
            input_names=["history", "history_mask"], output_names=["user_vector"],
            dynamic_shapes={"history": {0: batch}, "history_mask": {0: batch}},
        ))
    finally:
        model.train(was_training)


def save_model(model: SequentialRecommender, path: Path) -> None:
    """`model.pt`: the config and the weights (attribute index and content are buffers)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": model.config.to_json(), "state_dict": model.state_dict()}, path)


def load_model(path: Path) -> SequentialRecommender:
    checkpoint = torch.load(Path(path), map_location="cpu", weights_only=True)
    config = ModelConfig(**checkpoint["config"])
    state = checkpoint["state_dict"]
    model = SequentialRecommender(config)
    # Buffers whose shape depends on the data (the padded attribute index) come from the file.
    for name in ("attribute_index", "attribute_count", "content"):
        if name in state:
            setattr(model, name, state[name].clone())
    model.load_state_dict(state)
    model.eval()
    return model


def read_config(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))
