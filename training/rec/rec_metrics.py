"""Full-ranking metrics of next-item recommendation: each user's target ranked against every
item (history excluded or kept), and Recall/NDCG at 10 and 20 from those ranks. Shared by
`shelfwise eval rec` (training/rec/eval_rec.py) and the RecBole baseline's scoring
(training/rec/recbole_baseline.py), so each is checked by the same code."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

from training.rec.sequential_data import EvalSet, right_aligned

if TYPE_CHECKING:
    import torch

CUTOFFS = (10, 20)
METRICS = ("recall@10", "ndcg@10", "recall@20", "ndcg@20")
CHUNK_USERS = 512   # [512, 18k] float32 scores = 38 MB per chunk on Sports


def target_ranks(score_chunk: Callable[[np.ndarray], "torch.Tensor"], split: EvalSet,
                 chunk_users: int = CHUNK_USERS, exclude_history: bool = True) -> np.ndarray:
    """0-based rank of each user's target among all items except padding (id 0) and the items
    of the user's history; ties pessimistic. A target inside the history gets rank inf.
    `score_chunk(indices)` returns scores [len(indices), num_items + 1] for those users.
    `exclude_history=False` ranks against every item (RecBole's rule for sequential models)."""
    import torch

    ranks = np.empty(len(split.targets), dtype=np.float64)
    # Users in order of history length: chunks of similar lengths (a model trims its window).
    order = np.argsort([len(h) for h in split.histories], kind="stable")
    for start in range(0, len(order), chunk_users):
        index = order[start:start + chunk_users]
        scores = score_chunk(index).to(torch.float32)
        targets = torch.from_numpy(split.targets[index]).view(-1, 1)
        target_scores = scores.gather(1, targets)
        # Count every item scoring >= the target, then take the excluded ones back out (item 0
        # and the distinct history items): one pass over the scores, no masked copy.
        unique = [sorted(set(split.histories[i])) if exclude_history else [] for i in index]
        history = torch.from_numpy(right_aligned(unique, max(1, max(len(u) for u in unique))))
        real = history > 0
        at_least = (scores >= target_scores).sum(1) - 1   # the target itself is >= itself
        excluded = ((scores.gather(1, history) >= target_scores) & real).sum(1)
        excluded += (scores[:, :1] >= target_scores).view(-1).long()
        chunk_ranks = (at_least - excluded).to(torch.float64)
        chunk_ranks[((history == targets) & real).any(1)] = np.inf
        ranks[index] = chunk_ranks.numpy()
    return ranks


def per_user_metrics(ranks: np.ndarray) -> dict[str, np.ndarray]:
    out = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = np.where(np.isfinite(ranks), 1.0 / np.log2(np.where(np.isfinite(ranks), ranks, 0) + 2.0), 0.0)
    for k in CUTOFFS:
        hit = ranks < k
        out[f"recall@{k}"] = hit.astype(np.float64)
        out[f"ndcg@{k}"] = np.where(hit, gain, 0.0)
    return out


def summarize(ranks: np.ndarray) -> dict[str, float]:
    per_user = per_user_metrics(ranks)
    return {name: float(per_user[name].mean()) for name in METRICS}
