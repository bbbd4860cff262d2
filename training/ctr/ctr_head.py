"""The ranking CTR/CVR head: architecture, the prior (the feature scoring written as the head),
and the heads trained on logged events; their export and installation is
training/ctr/ctr_install.py.

Architecture (``CtrCvrHead``) is ESMM (Ma et al., "Entire Space Multi-Task Model", SIGIR 2018):
a shared MLP over the 8 ranking features (``services.ranking.features.FEATURE_NAMES``, in that
order) feeds a CTR tower and a CVR tower. The graph outputs

    ctr   = sigmoid(ctr_logit)                       P(click | impression)
    ctcvr = ctr * sigmoid(cvr_logit)                 P(click and purchase | impression)

so conversion is modelled over the whole impression space, not only over clicked items: CVR
labels exist only after a click, and a CVR model trained on clicks alone is biased on the
impressions it actually scores. Both outputs are float32 [N, 1]; ``ctcvr <= ctr`` by
construction.

Version 1 is a *prior*: there is no behaviour data yet, so the head is the documented,
transparent feature scoring (``services.ranking.scorers.FeatureScorer``, s = sum(weight_f *
feature_f)) written as an exact ONNX graph (a MatMul and two sigmoids, no training):

    ctr   = sigmoid(8 s - 5)                         (s = 0 -> 0.7 %, s = 0.5 -> 27 %, s = 1 -> 95 %)
    ctcvr = ctr * sigmoid(4 s - 4)                   (cvr: s = 0 -> 1.8 %, s = 1 -> 50 %)

so serving through the head ranks exactly like the formula (the ranking service switches to the
head automatically once ``model_repository/ctr_head/<version>/model.onnx`` exists) until a head
trained on logged events replaces it, with calibrated-looking probabilities and the same graph
signature the trained head will have. (Until December 2026 version 1 was an MLP distilled from
the formula over 12,000 training steps, about four minutes of a first ``make up`` to
approximate what two ONNX nodes express exactly.)

Export (training/ctr/ctr_install.py) writes, atomically (staging folder, then rename)::

    model_repository/ctr_head/<version>/model.onnx      features float32[N, 8] -> ctr, ctcvr float32[N, 1]
    model_repository/ctr_head/<version>/metadata.json   what the version is and how well it matches

Usage: ``python -m training.encoders.export`` (also run by ``shelfwise export``) exports it together
with the text encoder when it is missing or outdated.

Heads trained on logged events (``shelfwise train ctr``, ``training.ctr.train_ctr``) train
:class:`PositionBiasedHead`: the same ESMM head times a PAL position-bias tower (Guo et al.,
RecSys 2019), P(click | x, position) = P(seen | position) · P(click | seen, x), so that what the
slot alone explains is not learned as relevance. Only the position-free part is exported
(:class:`ServingHead`, same graph signature), as a new version >= 2 with metadata kind
"trained on events" (``training.ctr.ctr_export.export_trained_head``); version 1 stays the prior's, so neither
export replaces the other, and ranking serves the highest version.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from services.ranking.features import FEATURE_NAMES, RRF_MAX
from services.ranking.scorers import CTR_HEAD_MODEL, FEATURE_WEIGHTS, FeatureScorer

MODEL_NAME = CTR_HEAD_MODEL
INPUT_NAME = "features"
OUTPUT_NAMES: tuple[str, ...] = ("ctr", "ctcvr")
NUM_FEATURES = len(FEATURE_NAMES)
PRIOR_KIND = f"prior, {FeatureScorer.version} as an exact graph"
# Kinds earlier exporters wrote for version 1; a newer export may replace them.
PRIOR_KIND_PREFIX = "prior"
# Same opset as the text encoder: torch's ONNX function library is written in 18 (no version
# conversion pass) and every Triton ONNX Runtime backend since 23.04 runs it.
OPSET_VERSION = 18

# Prior targets: logits linear in the formula score s (see the module docstring).
CTR_SLOPE, CTR_INTERCEPT = 8.0, -5.0
CVR_SLOPE, CVR_INTERCEPT = 4.0, -4.0

# Quality gates of the prior against the formula, on a fresh sample: the exact graph is within
# float32 rounding; the gates stay loose enough to read older exports' metadata.
MIN_SPEARMAN = 0.999
MAX_ABS_ERROR = 0.01
# The exact graph against the formula computed in float64.
MAX_PRIOR_DIFF = 1e-6
# ONNX Runtime vs torch: the graph is a few small matmuls, so anything above float32 rounding
# noise means the export changed the computation.
MAX_EXPORT_DIFF = 1e-5
# Batch sizes checked after export: 1 (a single candidate), an odd size the exporter never saw,
# a typical page-sized batch and a full 2000-candidate list (ranking's MAX_CANDIDATES).
VERIFY_BATCH_SIZES: tuple[int, ...] = (1, 7, 256, 2000)


# --- the model ---------------------------------------------------------------------------------


class CtrCvrHead(nn.Module):
    """ESMM head: shared MLP (8 -> 64 -> 32) + CTR and CVR towers (32 -> 16 -> 1 each).

    ``forward(features[N, 8])`` returns ``(ctr[N, 1], ctcvr[N, 1])``; :meth:`logits` gives the
    two towers' raw logits, which is what training fits (MSE on logits keeps gradients alive
    where the sigmoid saturates).
    """

    def __init__(
        self,
        num_features: int = NUM_FEATURES,
        shared: tuple[int, int] = (64, 32),
        tower: int = 16,
        encoder: "PiecewiseLinearEncoding | None" = None,
    ):
        super().__init__()
        # Optional input encoding inside the graph (heads trained on events use one; the prior
        # does not), so serving still sends the raw features.
        self.encoder = encoder
        # Sharing the bottom lets the sparse CVR signal (purchases are ~100x rarer than clicks)
        # reuse the representation the abundant click signal trains: ESMM's second idea.
        self.shared = nn.Sequential(
            nn.Linear(encoder.out_features if encoder is not None else num_features, shared[0]),
            nn.ReLU(),
            nn.Linear(shared[0], shared[1]),
            nn.ReLU(),
        )
        self.ctr_tower = nn.Sequential(nn.Linear(shared[1], tower), nn.ReLU(), nn.Linear(tower, 1))
        self.cvr_tower = nn.Sequential(nn.Linear(shared[1], tower), nn.ReLU(), nn.Linear(tower, 1))

    def logits(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.shared(self.encoder(features) if self.encoder is not None else features)
        return self.ctr_tower(hidden), self.cvr_tower(hidden)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ctr_logit, cvr_logit = self.logits(features)
        ctr = torch.sigmoid(ctr_logit)
        # pCTCVR = pCTR * pCVR over the entire impression space; the product (rather than a
        # third tower) is what makes ctcvr <= ctr hold for every input.
        return ctr, ctr * torch.sigmoid(cvr_logit)


# --- the prior: samples, targets, distillation -------------------------------------------------


def _column(name: str) -> int:
    return FEATURE_NAMES.index(name)


def formula_weights() -> np.ndarray:
    """FEATURE_WEIGHTS in FEATURE_NAMES order (float64), i.e. what FeatureScorer multiplies by."""
    return np.array([FEATURE_WEIGHTS[name] for name in FEATURE_NAMES], dtype=np.float64)


def formula_scores(features: np.ndarray) -> np.ndarray:
    """s = Σ weight_f · feature_f, the documented feature scoring (float64 [N])."""
    return np.asarray(features, dtype=np.float64) @ formula_weights()


def prior_logits(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Target (ctr logit, cvr logit) for formula scores s."""
    scores = np.asarray(scores, dtype=np.float64)
    return CTR_SLOPE * scores + CTR_INTERCEPT, CVR_SLOPE * scores + CVR_INTERCEPT


def prior_ctr(scores: np.ndarray) -> np.ndarray:
    """ctr* = sigmoid(8 s - 5)."""
    return 1.0 / (1.0 + np.exp(-prior_logits(scores)[0]))


def _fusion_from_ranks(ranks: np.ndarray) -> np.ndarray:
    """fusion feature of an item at 1-based ``ranks`` in one list (RRF, k = 60) / RRF_MAX."""
    return (1.0 / (60.0 + ranks)) / RRF_MAX


def sample_features(n: int, rng: np.random.Generator) -> np.ndarray:
    """float32 [n, 8] feature vectors shaped like what ranking sees (plus the whole cube).

    The head only ever has to be right where the features actually land, but it must be right
    *everywhere* there, so the sample mixes:

    * realistic search rows: skewed cosine similarities, BM25 coverage that is often 0 (no
      word matched) or 1 (full match), fusion values RRF can actually produce (one or both
      lists), brand/category matches that are exactly 0 or 1 and mostly 0, attribute matches
      that are shares k/m of 1-3 named values, popularity that is 0 for never-engaged items,
      personal affinity that is 0 for shoppers without history;
    * browse rows (no text query): dense, BM25 and fusion all 0, ranking by what was named
      and by popularity alone;
    * near-tie clusters: 8 jittered copies (±0.005) of one realistic row, where small errors
      would swap neighbours on a page;
    * strong matches (every feature near 1): the top of the page, where the scores are
      highest and the sigmoid steepest in probability, and which the other kinds rarely reach;
    * cube corners (every feature 0 or 1) and uniform rows, so the head also stays linear-like
      on combinations the realistic sampler rarely draws.
    """
    dense, bm25, fusion, brand, category, attribute, popularity, personal = (_column(name) for name in FEATURE_NAMES)
    out = np.empty((n, NUM_FEATURES), dtype=np.float64)
    # Row kinds: 0 uniform, 1 realistic search, 2 browse, 3 near-tie cluster, 4 cube corner,
    # 5 strong match.
    kinds = rng.choice(6, size=n, p=(0.18, 0.36, 0.10, 0.18, 0.08, 0.10))

    def realistic(m: int) -> np.ndarray:
        rows = np.zeros((m, NUM_FEATURES))
        # MiniLM cosines of related text sit mostly in 0.1-0.8; negatives are clipped to 0.
        rows[:, dense] = np.where(rng.random(m) < 0.08, 0.0, np.clip(rng.beta(2.0, 2.2, m), 0.0, 1.0))
        coverage = rng.random(m)
        rows[:, bm25] = np.select([coverage < 0.30, coverage < 0.45], [0.0, 1.0], rng.random(m))
        # Fusion: in one list at rank r -> 61 / (2 (60 + r)) <= 0.5; in both -> the sum, <= 1.
        first = _fusion_from_ranks(np.floor(np.exp(rng.uniform(0.0, np.log(1000.0), m))))
        second = _fusion_from_ranks(np.floor(np.exp(rng.uniform(0.0, np.log(1000.0), m))))
        lists = rng.random(m)
        rows[:, fusion] = np.clip(np.select([lists < 0.05, lists < 0.55], [0.0, first], first + second), 0.0, 1.0)
        rows[:, brand] = (rng.random(m) < 0.30) & (rng.random(m) < 0.5)
        rows[:, category] = (rng.random(m) < 0.40) & (rng.random(m) < 0.6)
        named = rng.integers(1, 4, m)
        matched = rng.binomial(named, 0.5)
        rows[:, attribute] = np.where(rng.random(m) < 0.30, matched / named, 0.0)
        engaged = rng.random(m)
        rows[:, popularity] = np.select([engaged < 0.40, engaged < 0.45], [0.0, 1.0], rng.random(m))
        # Anonymous or new shoppers have no history (0); otherwise the affinity is relative to
        # the best candidate: exactly 1 for it, spread over (0, 1) below.
        history = rng.random(m)
        rows[:, personal] = np.select([history < 0.5, history < 0.6], [0.0, 1.0], rng.beta(1.5, 2.0, m))
        return rows

    index = np.flatnonzero(kinds == 0)
    out[index] = rng.random((len(index), NUM_FEATURES))
    index = np.flatnonzero(kinds == 1)
    out[index] = realistic(len(index))
    index = np.flatnonzero(kinds == 2)
    rows = realistic(len(index))
    rows[:, [dense, bm25, fusion]] = 0.0
    # Browsing is mostly by category, so named-category matches are more frequent there.
    rows[:, category] = rng.random(len(index)) < 0.7
    out[index] = rows
    index = np.flatnonzero(kinds == 3)
    if len(index):
        clusters = math.ceil(len(index) / 8)
        bases = np.repeat(realistic(clusters), 8, axis=0)[: len(index)]
        jitter = rng.uniform(-0.005, 0.005, bases.shape)
        continuous = [dense, bm25, fusion, popularity, personal]
        bases[:, continuous] = np.clip(bases[:, continuous] + jitter[:, continuous], 0.0, 1.0)
        out[index] = bases
    index = np.flatnonzero(kinds == 4)
    out[index] = rng.random((len(index), NUM_FEATURES)) < 0.5
    index = np.flatnonzero(kinds == 5)
    rows = rng.beta(4.0, 1.0, (len(index), NUM_FEATURES))
    binary = [brand, category]
    rows[:, binary] = rng.random((len(index), len(binary))) < 0.8
    out[index] = rows
    return out.astype(np.float32)


# --- heads trained on logged events: position bias (PAL) + ESMM --------------------------------

class PiecewiseLinearEncoding(nn.Module):
    """Each feature, plus its piecewise-linear encoding over quantile bins of the training data
    (Gorishniy et al., "On Embeddings for Numerical Features in Tabular Deep Learning", NeurIPS
    2022): bin t of feature f is clamp((x_f - lower_ft) / width_ft, 0, 1).

    Why: logged ranking features have sharp structure (BM25 coverage exactly 1 for a full match,
    affinity exactly 1 for the best candidate, popularity steps), which gradient-boosted trees
    split on at once and a ReLU MLP on raw [0, 1] inputs learns slowly; measured on simulated
    shop traffic, the raw-input head's validation AUC stayed well below LightGBM's. Bins where
    the data has a point mass (binary features, exact zeros) get a tiny width, i.e. become
    steps. Edges are buffers, so they are constants of the exported graph.
    """

    def __init__(self, lower: torch.Tensor, width: torch.Tensor):
        super().__init__()
        self.register_buffer("lower", lower.to(torch.float32))  # [F, T]
        self.register_buffer("width", width.to(torch.float32))  # [F, T]
        self.out_features = int(lower.shape[0] * (lower.shape[1] + 1))

    @classmethod
    def from_data(cls, features: np.ndarray, bins: int = 16) -> "PiecewiseLinearEncoding":
        quantiles = np.quantile(np.asarray(features, dtype=np.float64), np.linspace(0.0, 1.0, bins + 1), axis=0).T
        lower, upper = quantiles[:, :-1], quantiles[:, 1:]
        return cls(torch.from_numpy(lower), torch.from_numpy(np.maximum(upper - lower, 1e-6)))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        encoded = ((features.unsqueeze(-1) - self.lower) / self.width).clamp(0.0, 1.0)
        return torch.cat([features, encoded.flatten(1)], dim=1)


TRAINED_KIND = "trained on events"
MLP_FAMILY = "ESMM + PAL, MLP towers"
# Position buckets for the position-bias tower: one per slot on the first pages (where the
# examination probability changes fastest), then wider ones. Bucket b holds positions
# [POSITION_EDGES[b], POSITION_EDGES[b + 1]); the last one is open-ended.
POSITION_EDGES: tuple[int, ...] = (
    *range(1, 21), 25, 30, 40, 50, 75, 100, 150, 200, 300, 500, 1000,
)


def position_buckets(positions: np.ndarray) -> np.ndarray:
    """1-based positions -> int64 bucket indices into POSITION_EDGES."""
    positions = np.maximum(np.asarray(positions, dtype=np.int64), 1)
    return np.searchsorted(np.asarray(POSITION_EDGES), positions, side="right") - 1


class PositionBiasedHead(nn.Module):
    """Training-time model: an ESMM :class:`CtrCvrHead` (the relevance part, what is exported)
    times a position-bias tower (PAL, Guo et al., RecSys 2019)::

        P(click | x, pos)           = P(seen | pos) · P(click | seen, x)
        P(click, purchase | x, pos) = P(seen | pos) · P(click | seen, x) · P(purchase | click, x)

    Jointly trained, the position tower absorbs what the slot alone explains (top slots are
    examined more, whatever is shown there), so the relevance towers learn the click
    probability of an item once seen, free of the logging policy's ordering. At serving there
    is no position yet (ranking decides it), and only ``relevance`` is exported.

    ``position_tower=False`` gives plain ESMM on the biased labels (the ablation).
    """

    def __init__(self, relevance: CtrCvrHead | None = None, position_tower: bool = True):
        super().__init__()
        self.relevance = relevance or CtrCvrHead()
        # One logit per bucket, no features: PAL's position module. Starting at 0 (seen = 0.5)
        # leaves the split between the towers to the data.
        self.seen_logit = nn.Embedding(len(POSITION_EDGES), 1) if position_tower else None
        if self.seen_logit is not None:
            nn.init.zeros_(self.seen_logit.weight)

    def log_seen(self, buckets: torch.Tensor) -> torch.Tensor:
        """log P(seen | position bucket), [N, 1] (0 without a position tower).

        Position 1 is pinned at P(seen) = 1. The product seen · relevance only fixes the two up
        to a common factor; left free, the first slot settles below 1 and, since relevance
        cannot exceed 1 to compensate, the most relevant items and the lower slots' curve get
        squashed (measured on the synthetic click model: slot 5 / slot 1 came out 0.37 where
        the truth is 0.2). Pinned, relevance is "the click probability at the top slot"."""
        if self.seen_logit is None:
            return torch.zeros((len(buckets), 1))
        log_seen = nn.functional.logsigmoid(self.seen_logit(buckets))
        return torch.where((buckets == 0).unsqueeze(-1), torch.zeros_like(log_seen), log_seen)

    def log_probabilities(self, features: torch.Tensor, buckets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log P(click), log P(click and purchase)), each [N, 1], at the positions shown.

        Logs of products of sigmoids are sums of logsigmoids, which stays finite where the
        probabilities underflow (purchases at low slots are ~1e-4)."""
        ctr_logit, cvr_logit = self.relevance.logits(features)
        log_click = self.log_seen(buckets) + nn.functional.logsigmoid(ctr_logit)
        return log_click, log_click + nn.functional.logsigmoid(cvr_logit)

    def seen_probabilities(self) -> np.ndarray:
        """P(seen | bucket) for every bucket of POSITION_EDGES (ones without a position tower)."""
        if self.seen_logit is None:
            return np.ones(len(POSITION_EDGES))
        with torch.no_grad():
            return self.log_seen(torch.arange(len(POSITION_EDGES))).exp().reshape(-1).numpy().astype(np.float64)


def bernoulli_nll(log_p: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean binary cross-entropy given log p (not logits): the PAL/ESMM probabilities are
    products, whose logs are what the model computes stably."""
    # log(1 - p) = log(-expm1(log p)); p is kept below 1 so the log stays finite.
    log_p = log_p.clamp(max=-1e-7)
    loss = -(labels * log_p + (1.0 - labels) * torch.log(-torch.expm1(log_p)))
    if weights is None:
        return loss.mean()
    return (loss * weights).sum() / weights.sum()


class ServingHead(nn.Module):
    """What is exported from a trained :class:`PositionBiasedHead`: the relevance towers with
    the same graph signature as the prior (features[N, 8] -> ctr, ctcvr [N, 1]).

    ``ctr = scale · P(click | seen, x)`` where ``scale`` is the mean P(seen | position) over the
    training impressions: a constant, so it never changes the order, but it calibrates the
    served ctr to the shop's average slot (as a position-free model trained on the same
    impressions would be) instead of to an always-examined slot. ``ctcvr = ctr · P(purchase |
    click, x)`` keeps ctcvr <= ctr.
    """

    def __init__(self, relevance: CtrCvrHead, scale: float = 1.0):
        super().__init__()
        self.relevance = relevance
        self.register_buffer("scale", torch.tensor([[float(scale)]], dtype=torch.float32))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ctr_logit, cvr_logit = self.relevance.logits(features)
        ctr = self.scale * torch.sigmoid(ctr_logit)
        return ctr, ctr * torch.sigmoid(cvr_logit)
