"""`shelfwise rules list | pin | hide | bury | boost | synonym | delete`: the merchandising rules
store, managed through retrieval's rule RPCs (PutRule, DeleteRule, ListRules). A rule is in
force on every retrieval replica within SHELFWISE_RULES_REFRESH_SECONDS (1 s by default) of the
command, without a restart; a rule that contradicts one in force is refused, naming it.

    shelfwise rules pin --id dad-watch --query "gift for dad" --product sku-123 --position 1
    shelfwise rules hide --id recall-42 --product sku-42
    shelfwise rules synonym --id sofa --terms sofa couch settee
    shelfwise rules list
"""

from __future__ import annotations

import argparse

from services.cli.commands.client import RETRIEVAL_ADDRESS, print_json

ACTIONS = ("pin", "hide", "bury", "boost", "synonym")


def register(commands) -> None:
    rules = commands.add_parser("rules", help="merchandising rules: pin, hide, bury, boost, synonyms")
    actions = rules.add_subparsers(dest="rules_command", required=True)

    def action(name: str, help_text: str, conditions: bool = True) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=help_text)
        sub.add_argument("--address", default=RETRIEVAL_ADDRESS, help="retrieval address")
        sub.add_argument("--json", action="store_true", help="print the response as one JSON object")
        if name in ACTIONS:
            sub.add_argument("--id", required=True, help="the rule's id (a-z, 0-9, - and _); an existing id is replaced")
            sub.add_argument("--note", default="", help="why the rule exists, for the next merchandiser")
        if conditions:
            sub.add_argument("--query", default="", help="only for this search text (ignoring case and spaces)")
            sub.add_argument("--category", default="", help="only when the request filters on this category")
        sub.set_defaults(run=run_rules, rules_action=name)
        return sub

    action("list", "the rules in force and the store's version", conditions=False)
    pin = action("pin", "put a product at a fixed position")
    pin.add_argument("--product", required=True)
    pin.add_argument("--position", type=int, required=True, help="1-based")
    action("hide", "never show these products").add_argument("--product", nargs="+", required=True)
    action("bury", "send these products to the end of the relevance order").add_argument("--product", nargs="+", required=True)
    boost = action("boost", "add log-odds to the score of products, or of an attribute value")
    boost.add_argument("--product", nargs="+", default=[])
    boost.add_argument("--attribute", default="")
    boost.add_argument("--value", default="")
    boost.add_argument("--boost", type=float, required=True, help="-5..5, not 0 (1 = one log-odds unit)")
    synonym = action("synonym", "words that mean the same in text search", conditions=False)
    synonym.add_argument("--terms", nargs="+", required=True)
    synonym.add_argument("--one-way", action="store_true", help="the first term searches the others, not the reverse")
    delete = action("delete", "remove a rule", conditions=False)
    delete.add_argument("rule_id")


def rule_message(args):
    """The Rule message an action's arguments describe."""
    from shelfwise.retrieval.v1 import retrieval_pb2

    action = getattr(retrieval_pb2, f"RULE_ACTION_{args.rules_action.upper()}")
    rule = retrieval_pb2.Rule(id=args.id, action=action, note=args.note)
    if hasattr(args, "query"):
        rule.query, rule.category = args.query, args.category
    if args.rules_action == "pin":
        rule.product_ids.append(args.product)
        rule.position = args.position
    elif args.rules_action in ("hide", "bury", "boost"):
        rule.product_ids.extend(args.product)
    if args.rules_action == "boost":
        rule.attribute, rule.value, rule.boost = args.attribute, args.value, args.boost
    if args.rules_action == "synonym":
        rule.terms.extend(args.terms)
        rule.one_way = args.one_way
    return rule


async def run_rules(args) -> int:
    import grpc
    from shelfwise.retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc

    from services.common.channels import create_channel

    async with create_channel(args.address, retry_refused=True) as channel:
        stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
        try:
            if args.rules_action == "list":
                response = await stub.ListRules(retrieval_pb2.ListRulesRequest(), timeout=10)
            elif args.rules_action == "delete":
                response = await stub.DeleteRule(retrieval_pb2.DeleteRuleRequest(rule_id=args.rule_id), timeout=10)
            else:
                response = await stub.PutRule(retrieval_pb2.PutRuleRequest(rule=rule_message(args)), timeout=10)
        except grpc.aio.AioRpcError as error:
            print(f"{error.code().name}: {error.details()}")
            return 1
    if args.json:
        print_json(response)
    elif args.rules_action == "list":
        print(f"rules version {response.rules_version}: {len(response.rules)} rules in force")
        for rule in response.rules:
            print(f"  {describe(rule)}")
    elif args.rules_action == "delete":
        print(f"deleted {args.rule_id}; rules version {response.rules_version}")
    else:
        print(f"{'created' if response.created else 'replaced'} {describe(response.rule)}; rules version {response.rules_version}")
    return 0


def describe(rule) -> str:
    """One line: id, action, what it does and when."""
    from shelfwise.retrieval.v1 import retrieval_pb2

    action = retrieval_pb2.RuleAction.Name(rule.action).removeprefix("RULE_ACTION_").lower()
    what = {
        "pin": lambda: f"{rule.product_ids[0]} at position {rule.position}",
        "hide": lambda: ", ".join(rule.product_ids),
        "bury": lambda: ", ".join(rule.product_ids),
        "boost": lambda: f"{rule.attribute}={rule.value}" if rule.attribute else ", ".join(rule.product_ids),
        "synonym": lambda: f"{rule.terms[0]}{' -> ' if rule.one_way else ' = '}{', '.join(rule.terms[1:])}",
    }[action]()
    conditions = [f"query {rule.query!r}" if rule.query else "", f"category {rule.category!r}" if rule.category else ""]
    when = " and ".join(c for c in conditions if c)
    boost = f" by {rule.boost:+g}" if action == "boost" else ""
    return f"{rule.id}: {action} {what}{boost}" + (f" (when {when})" if when else "") + f" [v{rule.version}]"
