"""The arms a simulated experiment compares: named presets of the gateway's experiment settings
(bm25, dense, hybrid, full, and the fair control of `--compare learning` with one learned part
per arm), an arm's settings from its spec (a preset, optionally pinning a CTR head version), and
the experiments file that serves them."""

from __future__ import annotations

import re
from typing import Sequence

# Arms by name: how each serves a search (services.gateway.experiments settings).
ARM_PRESETS = {
    "bm25": {"retrieval": "lexical", "ranking": "retrieval", "query_understanding": False},
    "dense": {"retrieval": "dense", "ranking": "formula"},
    "hybrid": {"retrieval": "hybrid", "ranking": "formula"},
    "full": {},  # everything: query understanding, hybrid retrieval, the deployed ranker
    # The fair control of `--compare learning`: the best configuration with nothing learned from
    # behaviour (the relevance ranker is trained on judgments, not on behaviour), and one arm
    # per behaviour-learned part added to it, then all of them.
    "control": {"popularity": False, "personalization": False, "ctr_head": False},
    "ctr-head": {"popularity": False, "personalization": False},
    "popularity": {"personalization": False, "ctr_head": False},
    "personalization": {"popularity": False, "ctr_head": False},
    "learned-all": {},
}


RANKER_SETTING = re.compile(r"ranker=([^,;)]+)")


def arm_setting(spec: str) -> dict:
    """An arm of the experiments file from a preset name, or ``full@N`` (``model``-ranked presets
    only): that preset with ctr_head version N pinned, named ``full-ctrN`` (to compare heads)."""
    preset, _, version = spec.partition("@")
    if preset not in ARM_PRESETS:
        raise ValueError(f"--arms: unknown arm {spec!r}; known: {', '.join(ARM_PRESETS)} (or full@N)")
    setting = {"name": preset, **ARM_PRESETS[preset]}
    if version:
        if not version.isdigit() or int(version) < 1 or setting.get("ranking", "model") != "model":
            raise ValueError(f"--arms: {spec!r}: @N pins ctr_head version N (>= 1) of a model-ranked arm such as full")
        setting.update(name=f"{preset}-ctr{int(version)}", ctr_head_version=int(version))
    return setting


def experiment_config(name: str, arms: Sequence[str], control: str | None = None, interleaving: bool = False) -> dict:
    settings = [arm_setting(arm) for arm in arms]
    names = [setting["name"] for setting in settings]
    if len(names) < 2 or len(set(names)) != len(names):
        raise ValueError(f"--arms: give two or more different arms, got {','.join(arms)}")
    if interleaving and len(names) != 2:
        raise ValueError(f"--arms: --interleaving compares exactly two arms, got {','.join(arms)}")
    experiment = {"name": name, "control": control or names[0], "arms": settings}
    if interleaving:
        experiment["interleaving"] = True
    return {"experiments": [experiment]}
