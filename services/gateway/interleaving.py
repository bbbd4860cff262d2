"""Team-draft interleaving of a Search: both arms of an interleaved experiment rank the results
and the page is cut from their merge, each result recording the arm that contributed it."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from typing import Callable

from shelfwise.gateway.v1 import gateway_pb2
from shelfwise.query_understanding.v1 import query_understanding_pb2 as qu_pb2

from services.gateway.experiments import ArmPolicy, Assignment, interleaving_seed, team_draft
from services.gateway.page_tokens import encode_page_token
from services.gateway.request_context import RequestContext
from services.gateway.stages import Page, RankingInputs, Stages
from services.gateway.validation import MAX_PAGE_SIZE

# What an arm's policy makes of the request: its understanding of the query, and its stage inputs.
StageInputs = Callable[[ArmPolicy], tuple[qu_pb2.UnderstandResponse, RankingInputs]]


async def interleaved(
    stages: Stages, context: RequestContext, assignment: Assignment, stage_inputs: StageInputs,
    window: tuple[int, int], query: str,
) -> tuple[qu_pb2.UnderstandResponse, Page]:
    """Both arms rank the top offset + page_size (`window`); team draft merges them (seeded by
    the unit and the query, so every page of one shopper's result list comes from the same
    merged list) and the requested page is cut from the merge. Past the deepest page ranking
    returns, only the control arm is served, recorded as that arm."""
    offset, page_size = window
    depth = offset + page_size
    experiment = assignment.experiment
    if depth > MAX_PAGE_SIZE:
        policy = experiment.arm(experiment.control).policy
        understood, inputs = stage_inputs(policy)
        page = await stages.retrieve_and_rank(context, inputs, offset, page_size, policy=policy)
        return understood, replace(page, experiment_arm=experiment.label(experiment.control))
    arms = [(arm.name, arm.policy) for arm in experiment.arms]
    inputs = {name: stage_inputs(policy) for name, policy in arms}
    # Each arm times its own stages; they are reported as "<stage>[<arm>]".
    arm_contexts = {name: replace(context, timings=[]) for name, _ in arms}
    pages = await asyncio.gather(*(
        stages.retrieve_and_rank(arm_contexts[name], arm_inputs, 0, depth, policy=policy)
        for (name, policy), (_, arm_inputs) in zip(arms, inputs.values())
    ))
    for name, _ in arms:
        context.timings.extend(gateway_pb2.StageTiming(stage=f"{t.stage}[{name}]", milliseconds=t.milliseconds)
                               for t in arm_contexts[name].timings)
    by_arm = dict(zip((name for name, _ in arms), pages))
    rng = random.Random(interleaving_seed(experiment, assignment.unit, query))
    merged = team_draft({name: [r.product.id for r in page.results] for name, page in by_arm.items()}, depth, rng)
    found = {name: {r.product.id: r for r in page.results} for name, page in by_arm.items()}
    results, contributors = [], []
    for n, (product_id, arm) in enumerate(merged[offset:depth]):
        result = gateway_pb2.SearchResult()
        result.CopyFrom(found[arm][product_id])
        result.position = offset + n + 1
        results.append(result)
        contributors.append(arm)
    total = max(page.total for page in pages)
    next_offset = offset + page_size
    version = ";".join(f"{name}:{page.model_version}" for name, page in by_arm.items())
    page = Page(
        results=results,
        total=total,
        next_token=encode_page_token(next_offset, context.page_scope) if next_offset < total else "",
        model_version=f"interleaved({version})",
        experiment_arm=assignment.label,
        interleaving_arms=tuple(contributors),
        # Facets of the control arm's candidates (the arms may retrieve differently); pins are
        # placed in each arm's list before the draft, which may move them by a position or two.
        facets=by_arm[experiment.control].facets,
        applied_rule_ids=tuple(sorted({rule for page in pages for rule in page.applied_rule_ids})),
    )
    # What the shopper's query was understood as: the first arm that understands it.
    shown = next((inputs[name][0] for name, policy in arms if policy.query_understanding), inputs[arms[0][0]][0])
    return shown, page
