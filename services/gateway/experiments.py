"""Online experiments on Search: arms from configuration, sticky assignment, team-draft
interleaving, and the attribution of clicks to interleaved arms.

Configuration is a JSON or TOML file named by ``SHELFWISE_EXPERIMENTS`` (absent = no
experiment). It is read and checked once, at gateway start-up; a bad file stops the gateway
with an error naming the field. Example (JSON)::

    {"experiments": [{
        "name": "bm25-vs-full", "control": "bm25",
        "arms": [
            {"name": "bm25", "weight": 1, "retrieval": "lexical", "ranking": "retrieval",
             "query_understanding": false},
            {"name": "full", "weight": 1}
        ]}]}

Per experiment: ``name`` (letters, digits, ``_ . -``, 1-64), ``arms`` (2 or more), optional
``salt`` (default: the name; change it to re-randomise), ``control`` (default: the first arm),
``traffic`` (share of all units in this experiment, default 1; the traffic of all experiments
sums to at most 1, so a unit is in at most one experiment and every impression records one
arm), ``interleaving`` (default false). Per arm: ``name``, ``weight`` (> 0, default 1),
``retrieval`` (``hybrid`` default | ``lexical`` | ``dense``), ``ranking`` (``model`` = the
deployed scorer, default | ``formula`` | ``retrieval`` = keep retrieval's order),
``query_understanding`` (default true; false = the raw normalised text, no spelling, filters
or language), ``ctr_head_version`` (optional int: pin this CTR head version for the arm), and
what ranking learned from behaviour, each on by default: ``popularity``, ``personalization``
(the shopper's history as a ranking feature) and ``ctr_head`` (the head trained on events);
``false`` leaves that part out of the arm's scores, so that arms can measure each part's worth.

Assignment unit: the ``user_id``, else the ``session_id`` (anonymous shoppers), else the
request id. The first two are sticky: the same id always gets the same arm, because the arm
is a pure function of SHA-256(salt, unit), which needs no storage and survives restarts and
replicas. A request with neither id cannot be sticky and is assigned per request; a shopper
who signs in mid-session moves from the session's arm to the user's. Users are therefore the
randomisation unit, which is why the report's intervals resample users, not searches.

Interleaving (``interleaving: true``, exactly two arms; weights are ignored): every request
is served both arms' rankings merged by team-draft interleaving (Radlinski, Kurup and
Joachims, 2008): in each round the arm with fewer picks so far (a coin flip on ties) adds its
best product not yet shown. Each position records the arm that contributed it
(``Impression.interleaving_arms``); clicks are credited to those arms and the arm with more
clicks on an impression wins it. The coin flips are seeded by the unit, the query and the
experiment, so a shopper paging through a result list sees one consistent merged list.

The impression's ``experiment_arm`` is ``"<experiment>/<arm>"`` (``"<experiment>/interleaved"``
for interleaved requests), so the report can select one experiment's impressions by prefix.

This module is pure logic (no grpc); search.py and interleaving.py apply the policies.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

RETRIEVAL_MODES = ("hybrid", "lexical", "dense")
RANKING_POLICIES = ("model", "formula", "retrieval")
INTERLEAVED = "interleaved"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
LEARNED_PARTS = ("popularity", "personalization", "ctr_head")  # services/ranking/ranker.py
_ARM_KEYS = {"name", "weight", "retrieval", "ranking", "query_understanding", "ctr_head_version", *LEARNED_PARTS}
_EXPERIMENT_KEYS = {"name", "arms", "salt", "control", "traffic", "interleaving"}


class ExperimentConfigError(ValueError):
    """A bad experiments file; the message names the field (e.g. ``experiments[0].arms[1].ranking``)."""

    def __init__(self, field: str, rule: str):
        super().__init__(f"{field}: {rule}")
        self.field = field


@dataclass(frozen=True)
class ArmPolicy:
    """How an arm serves a search."""

    retrieval: str = "hybrid"
    ranking: str = "model"
    query_understanding: bool = True
    ctr_head_version: int | None = None
    # Learned parts left out of ranking (a subset of LEARNED_PARTS).
    excluded: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Arm:
    name: str
    weight: float
    policy: ArmPolicy


@dataclass(frozen=True)
class Experiment:
    name: str
    arms: tuple[Arm, ...]
    salt: str
    control: str
    traffic: float = 1.0
    interleaving: bool = False

    def arm(self, name: str) -> Arm:
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise KeyError(f"experiment {self.name!r} has no arm {name!r}")

    def choose_arm(self, unit: str) -> Arm:
        """The arm of a unit: weights cut [0, 1) into intervals; the unit's hash picks one."""
        point = unit_hash(f"{self.salt}:arm", unit)
        total = sum(arm.weight for arm in self.arms)
        cumulative = 0.0
        for arm in self.arms:
            cumulative += arm.weight / total
            if point < cumulative:
                return arm
        return self.arms[-1]  # float rounding at the very top of the interval

    def label(self, arm: str) -> str:
        return f"{self.name}/{arm}"


@dataclass(frozen=True)
class Assignment:
    """What one request is served: an arm (split traffic) or two arms interleaved."""

    experiment: Experiment
    arm: Arm | None  # None when interleaved
    unit: str
    sticky: bool

    @property
    def label(self) -> str:
        return self.experiment.label(self.arm.name if self.arm else INTERLEAVED)

    @property
    def interleaved(self) -> bool:
        return self.arm is None


def unit_hash(salt: str, unit: str) -> float:
    """A uniform number in [0, 1) from SHA-256 (stable across processes, unlike hash())."""
    digest = hashlib.sha256(f"{salt}\x00{unit}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assignment_unit(user_id: str, session_id: str, request_id: str) -> tuple[str, bool]:
    """(unit, sticky): the user, else the session, else the request (not sticky). Prefixed so
    that a session id equal to some user id is still a different unit."""
    if user_id:
        return f"user:{user_id}", True
    if session_id:
        return f"session:{session_id}", True
    return f"request:{request_id}", False


# Salt of the split between experiments (and no experiment); fixed, so adding an experiment
# with spare traffic does not move the units of the others.
LAYER_SALT = "shelfwise-experiments-layer"


@dataclass(frozen=True)
class Experiments:
    experiments: tuple[Experiment, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.experiments)

    def get(self, name: str) -> Experiment:
        for experiment in self.experiments:
            if experiment.name == name:
                return experiment
        raise KeyError(f"no experiment named {name!r}")

    def assign(self, user_id: str, session_id: str, request_id: str) -> Assignment | None:
        if not self.experiments:
            return None
        unit, sticky = assignment_unit(user_id, session_id, request_id)
        point = unit_hash(LAYER_SALT, unit)
        cumulative = 0.0
        for experiment in self.experiments:
            cumulative += experiment.traffic
            if point < cumulative:
                arm = None if experiment.interleaving else experiment.choose_arm(unit)
                return Assignment(experiment, arm, unit, sticky)
        return None

    def pinned_ctr_head_versions(self) -> set[int]:
        return {
            arm.policy.ctr_head_version
            for experiment in self.experiments
            for arm in experiment.arms
            if arm.policy.ctr_head_version is not None
        }


# --------------------------------------------------------------------------- configuration


def load_experiments(path: str | Path | None) -> Experiments:
    """Reads and checks an experiments file (``.json`` or ``.toml``); None/"" = no experiments."""
    if not path:
        return Experiments()
    path = Path(path)
    if not path.is_file():
        raise ExperimentConfigError("SHELFWISE_EXPERIMENTS", f"file {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        raw = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as error:
        raise ExperimentConfigError(str(path), f"is not valid {path.suffix.lstrip('.') or 'JSON'}: {error}") from None
    return parse_experiments(raw)


def parse_experiments(raw: object) -> Experiments:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("experiments"), list):
        raise ExperimentConfigError("experiments", "the file must hold an object with a list 'experiments'")
    experiments = tuple(_experiment(entry, f"experiments[{i}]") for i, entry in enumerate(raw["experiments"]))
    names = [e.name for e in experiments]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ExperimentConfigError(f"experiments[{i}].name", f"duplicates experiment {name!r}")
    total = sum(e.traffic for e in experiments)
    if total > 1.0 + 1e-9:
        raise ExperimentConfigError("experiments[].traffic", f"must sum to at most 1 (a unit is in one experiment), got {total:g}")
    return Experiments(experiments)


def _name(value: object, field: str) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.match(value):
        raise ExperimentConfigError(field, f"must be 1-64 letters, digits, '_', '.' or '-', got {value!r}")
    return value


def _unknown_keys(entry: Mapping, allowed: set[str], field: str) -> None:
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise ExperimentConfigError(f"{field}.{unknown[0]}", f"is not a known setting (known: {', '.join(sorted(allowed))})")


def _experiment(entry: object, field: str) -> Experiment:
    if not isinstance(entry, Mapping):
        raise ExperimentConfigError(field, "must be an object")
    _unknown_keys(entry, _EXPERIMENT_KEYS, field)
    name = _name(entry.get("name"), f"{field}.name")
    arms_raw = entry.get("arms")
    if not isinstance(arms_raw, list) or len(arms_raw) < 2:
        raise ExperimentConfigError(f"{field}.arms", "must list at least two arms")
    arms = tuple(_arm(arm, f"{field}.arms[{i}]") for i, arm in enumerate(arms_raw))
    names = [arm.name for arm in arms]
    for i, arm_name in enumerate(names):
        if arm_name in names[:i]:
            raise ExperimentConfigError(f"{field}.arms[{i}].name", f"duplicates arm {arm_name!r}")
        if arm_name == INTERLEAVED:
            raise ExperimentConfigError(f"{field}.arms[{i}].name", f"{INTERLEAVED!r} is reserved")
    control = entry.get("control", names[0])
    if control not in names:
        raise ExperimentConfigError(f"{field}.control", f"must name one of the arms {names}, got {control!r}")
    salt = entry.get("salt", name)
    if not isinstance(salt, str) or not salt:
        raise ExperimentConfigError(f"{field}.salt", "must be a non-empty string")
    traffic = entry.get("traffic", 1.0)
    if isinstance(traffic, bool) or not isinstance(traffic, (int, float)) or not 0 < traffic <= 1:
        raise ExperimentConfigError(f"{field}.traffic", f"must be a number in (0, 1], got {traffic!r}")
    interleaving = entry.get("interleaving", False)
    if not isinstance(interleaving, bool):
        raise ExperimentConfigError(f"{field}.interleaving", f"must be true or false, got {interleaving!r}")
    if interleaving and len(arms) != 2:
        raise ExperimentConfigError(f"{field}.arms", f"interleaving compares exactly two arms, got {len(arms)}")
    return Experiment(name, arms, salt, control, float(traffic), interleaving)


def _arm(entry: object, field: str) -> Arm:
    if not isinstance(entry, Mapping):
        raise ExperimentConfigError(field, "must be an object")
    _unknown_keys(entry, _ARM_KEYS, field)
    name = _name(entry.get("name"), f"{field}.name")
    weight = entry.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight < float("inf"):
        raise ExperimentConfigError(f"{field}.weight", f"must be a number > 0, got {weight!r}")
    retrieval = entry.get("retrieval", "hybrid")
    if retrieval not in RETRIEVAL_MODES:
        raise ExperimentConfigError(f"{field}.retrieval", f"must be one of {', '.join(RETRIEVAL_MODES)}, got {retrieval!r}")
    ranking = entry.get("ranking", "model")
    if ranking not in RANKING_POLICIES:
        raise ExperimentConfigError(f"{field}.ranking", f"must be one of {', '.join(RANKING_POLICIES)}, got {ranking!r}")
    understanding = entry.get("query_understanding", True)
    if not isinstance(understanding, bool):
        raise ExperimentConfigError(f"{field}.query_understanding", f"must be true or false, got {understanding!r}")
    version = entry.get("ctr_head_version")
    if version is not None:
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ExperimentConfigError(f"{field}.ctr_head_version", f"must be an integer >= 1, got {version!r}")
        if ranking != "model":
            raise ExperimentConfigError(f"{field}.ctr_head_version", "only applies to ranking 'model'")
    excluded = set()
    for part in LEARNED_PARTS:
        used = entry.get(part, True)
        if not isinstance(used, bool):
            raise ExperimentConfigError(f"{field}.{part}", f"must be true or false, got {used!r}")
        if not used:
            excluded.add(part)
    if version is not None and "ctr_head" in excluded:
        raise ExperimentConfigError(f"{field}.ctr_head_version", "cannot pin a CTR head the arm leaves out (ctr_head: false)")
    return Arm(name, float(weight), ArmPolicy(retrieval, ranking, understanding, version, frozenset(excluded)))


def check_pinned_models(experiments: Experiments, repository: Path) -> None:
    """Start-up check that every pinned ctr_head version exists in the model repository."""
    from services.common.inference import find_model

    for experiment in experiments.experiments:
        for i, arm in enumerate(experiment.arms):
            version = arm.policy.ctr_head_version
            if version is not None and find_model(repository, "ctr_head", version) is None:
                raise ExperimentConfigError(
                    f"experiments[{experiment.name}].arms[{i}].ctr_head_version",
                    f"ctr_head version {version} is not in {repository}",
                )


# --------------------------------------------------------------------------- interleaving


def interleaving_seed(experiment: Experiment, unit: str, query: str) -> int:
    digest = hashlib.sha256(f"{experiment.salt}\x00interleave\x00{unit}\x00{query}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def team_draft(rankings: Mapping[str, Sequence[str]], length: int, rng: random.Random) -> list[tuple[str, str]]:
    """Team-draft interleaving of two rankings: up to ``length`` (product id, arm) pairs.

    Each round the arm with fewer picks so far (a fair coin on a tie) adds its best product not
    already in the list. A product both arms rank is shown once and credited to the arm that
    picked it. An arm with nothing left lets the other one continue, so the merged list is as
    long as the union allows.
    """
    if len(rankings) != 2:
        raise ValueError(f"team-draft interleaving needs exactly two rankings, got {len(rankings)}")
    (arm_a, list_a), (arm_b, list_b) = rankings.items()
    lists = {arm_a: list(list_a), arm_b: list(list_b)}
    cursor = {arm_a: 0, arm_b: 0}
    picks = {arm_a: 0, arm_b: 0}
    shown: set[str] = set()
    merged: list[tuple[str, str]] = []

    def next_of(arm: str) -> str | None:
        items = lists[arm]
        while cursor[arm] < len(items) and items[cursor[arm]] in shown:
            cursor[arm] += 1
        return items[cursor[arm]] if cursor[arm] < len(items) else None

    while len(merged) < length:
        if picks[arm_a] < picks[arm_b]:
            turn = arm_a
        elif picks[arm_b] < picks[arm_a]:
            turn = arm_b
        else:
            turn = arm_a if rng.random() < 0.5 else arm_b
        other = arm_b if turn == arm_a else arm_a
        product = next_of(turn)
        if product is None:
            turn, product = other, next_of(other)
            if product is None:
                break
        shown.add(product)
        picks[turn] += 1
        merged.append((product, turn))
    return merged


@dataclass(frozen=True)
class InterleavingCredit:
    clicks: dict[str, int]
    winner: str | None  # None: a tie (including no clicks)


def credit_clicks(
    interleaving_arms: Sequence[str], first_position: int, clicked_positions: Sequence[int], arms: Sequence[str]
) -> InterleavingCredit:
    """Credits each click (by its 1-based position on the logged page) to the arm that
    contributed that position; the arm with more credited clicks wins the impression. A
    position repeated (the same product clicked twice) counts once; positions off the page are
    ignored (they cannot be attributed)."""
    clicks = {arm: 0 for arm in arms}
    for position in sorted(set(clicked_positions)):
        index = position - first_position
        if 0 <= index < len(interleaving_arms):
            arm = interleaving_arms[index]
            clicks[arm] = clicks.get(arm, 0) + 1
    ranked = sorted(clicks.items(), key=lambda item: -item[1])
    if not ranked or ranked[0][1] == 0 or (len(ranked) > 1 and ranked[0][1] == ranked[1][1]):
        return InterleavingCredit(clicks, None)
    return InterleavingCredit(clicks, ranked[0][0])
