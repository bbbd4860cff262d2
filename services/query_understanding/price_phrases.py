"""Price phrases in a query: the bound or range a shopper wrote ("under $50", "50元以下"), with
the currency written, and the words that make a number a price.

All functions take *normalized* text (`services.common.text.normalize`: lower-case, NFKC, so
full-width digits and `＄`/`￥` are already ASCII/`¥`).

Price phrases (`extract_price`), English:
  upper bound  "under $50", "under 50", "below 50 dollars", "less than $50", "cheaper than 50",
               "lower than 50", "up to 50", "max 50", "at most 50", "no more than 50",
               "within $50", "< 50", "<= 50", "$50 or less", "50 dollars and under",
               "$50 max"
  lower bound  "over $20", "above 20", "more than 20", "greater than 20", "at least 20",
               "min 20", "starting at 20", "> 20", ">= 20", "from $20", "$20 and up",
               "$20 or more", "$20+"
  range        "between 20 and 50", "from 20 to 50", "$20-$50", "$20 - 50", "20 to 50 dollars",
               "20-50 euros"
  optional lead-in "price", "priced", "prices", "costing" ("priced under $30").
Chinese (amounts in digits, Chinese numerals "一百元以下", or with 千/万 "1万以内"):
  upper bound  "50元以下", "50块以下", "100元以内", "100以内", "100元之内", "低于50元",
               "不超过100元", "不高于", "不到", "少于", "小于", "最多", "最高"
  lower bound  "50元以上", "50元起", "高于50", "超过50", "大于", "不低于", "不少于", "至少", "最低"
  range        "50到100元", "50-100元", "50至100块", "价格在50到100之间", "从50到100"
  optional lead-in "价格", "价位", "售价", "预算" (+ "在").
Budget, an upper bound: "budget $50", "budget of 50", "预算80元".
Currency: `$ € £ ¥ ₽ ₺ ₹`, "usd", "eur", "gbp", "chf", "rmb" before the number; those signs,
"dollars", "bucks", "usd", "euros", "eur", "gbp", "chf", "kr", "sek", "nok", "dkk", "pln", "zł",
"rub", "rmb", "yuan", "元", "块(钱)", "美元", "人民币" after it. The bound is the number as
written; `PriceFilter.currency` names the currency written (ISO 4217, None when none is), and
query understanding converts it into the catalogue's (`services.query_understanding.prices`).

A bare number is never a price ("iphone 15", "size 9", "2 pack"): it needs a price keyword, a
currency sign or word, or (ranges) both ends bracketed by "between"/"from"/a currency. A number
directly followed by a unit ("under 50 kg", "up to 50% off", "over 20 pcs") is not a price either.
Numbers may have decimals ("$19.99") and thousands separators ("$1,000").
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import NamedTuple

from services.common.text import HAN


@dataclass(frozen=True)
class PriceFilter:
    """A price bound or range found in a query.

    `min`/`max` are the bounds as written (either may be None, never both); the caller checks
    them (e.g. min <= max). `phrase` is the exact text of the query that expressed them, to be
    removed from the search text.
    """

    min: float | None
    max: float | None
    phrase: str
    currency: str | None = None


# --- price patterns -------------------------------------------------------------------------

_ARABIC_NUM = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
# Chinese numerals ("一百", "两千五", "十") and the multipliers written after Arabic digits
# ("1万" = 10000, "5千" = 5000). Unlike digits, these characters also occur inside ordinary
# words ("百搭" versatile, "一切", "千克" kilogram), so such an amount counts only when a
# currency word or a price-bound word follows it, or no Han character does.
_CN_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6,
              "七": 7, "八": 8, "九": 9}
_CN_MULTIPLIERS = {"十": 10, "百": 100, "千": 1000, "万": 10_000}
_CN_NUMERAL_CHARS = "".join(_CN_DIGITS) + "".join(_CN_MULTIPLIERS)
_CN_AMOUNT_END = (
    r"(?=\s*(?:美元|人民币|块钱|块|元|以下|以内|之内|之下|封顶|以上|到|至|之间|区间|左右)"
    rf"|\s|$|[^{HAN}])"
)
_NUM = (
    rf"(?:{_ARABIC_NUM}(?:[千万]{_CN_AMOUNT_END})?"
    rf"|(?<![{_CN_NUMERAL_CHARS}])[{_CN_NUMERAL_CHARS}]+{_CN_AMOUNT_END})"
)
_UNITS = (
    r"%|percent|off|kg|kgs|g|gr|grams?|mg|lbs?|oz|ml|l|cl|liters?|litres?|cm|mm|m|km|inch|"
    r"inches|ft|feet|foot|gb|tb|mb|mah|w|watts?|v|volts?|hz|mp|pcs|pieces?|pack|packs|pk|ct|"
    r"count|x|years?|yrs?|yo|months?|days?|hours?|hrs?|minutes?|mins?|people|persons?|seats?|"
    r"colou?rs?|styles?|items?|reviews?|stars?|sizes?"
)
_CUR_PREFIX = r"(?:[$€£¥₽₺₹]|usd|us\$|eur|gbp|chf|rmb)"
_CUR_SUFFIX = (
    r"(?:dollars?|bucks?|usd|euros?|eur|gbp|chf|kr|sek|nok|dkk|pln|zł|rub|rmb|yuan|"
    r"美元|人民币|块钱|块|元|[$€£¥₽₺₹](?!\s*\d))"  # a sign before a number is the next amount's
)
# Chinese measure words/units: "5到10岁" (ages), "2件" (pieces), "500克" (grams) are not prices.
_CN_UNITS = "岁个件只双斤克千吨天年月日号码寸米升度层位人台张片瓶盒袋包箱支条套"
_NOT_AFTER_NUMBER = rf"(?![\d.,]?\d)(?![a-z{_CN_UNITS}])(?!\s*(?:{_UNITS})(?![a-z]))"


def _money(tag: str) -> str:
    """A price amount: optional currency sign/code, number, optional currency word/sign."""
    return (
        rf"(?P<{tag}cp>{_CUR_PREFIX}\s*)?(?<![\d.,])(?P<{tag}>{_NUM})"
        rf"(?:\s*(?P<{tag}cs>{_CUR_SUFFIX})(?![a-z])|{_NOT_AFTER_NUMBER})"
    )


_START = r"(?<![a-z0-9.$€£¥₽₺₹])"  # a phrase starts a word (and never inside a number)
_EN_LEAD = r"(?:(?P<lead>prices?|priced|costing|costs?)\s+)?"
_CN_LEAD = r"(?:(?P<lead>价格|价位|售价|预算)\s*(?:在|是)?\s*)?"
_RANGE_SEP = r"\s*(?:-|–|—|~|to|and|until|till)\s*"
_CN_RANGE_SEP = r"\s*(?:到|至|-|–|—|~)\s*"

# (kind, pattern, needs_currency). kind: "max", "min" or "range". `needs_currency`: the phrase
# counts only if a currency sign/word is present somewhere in it (or a keyword in group `kw`).
_PRICE_PATTERNS: list[tuple[str, re.Pattern[str], bool]] = [
    (
        "range",
        re.compile(
            rf"{_START}{_EN_LEAD}(?P<kw>between|from)\s+{_money('a')}{_RANGE_SEP}{_money('b')}"
        ),
        False,
    ),
    ("range", re.compile(rf"{_START}{_EN_LEAD}{_money('a')}{_RANGE_SEP}{_money('b')}"), True),
    (
        "range",
        re.compile(
            rf"{_START}{_CN_LEAD}(?P<kw>从)?\s*{_money('a')}{_CN_RANGE_SEP}{_money('b')}\s*(?P<kw2>之间|区间)?"
        ),
        True,
    ),
    (
        "max",
        re.compile(
            rf"{_START}{_EN_LEAD}(?:(?:under|below|less\s+than|cheaper\s+than|lower\s+than|"
            rf"up\s*to|maximum|max|at\s+most|no\s+more\s+than|not\s+more\s+than|within)\s*"
            rf"|(?:<=|<|≤)\s*){_money('a')}"
        ),
        False,
    ),
    (
        "min",
        re.compile(
            rf"{_START}{_EN_LEAD}(?:(?:over|above|more\s+than|greater\s+than|higher\s+than|"
            rf"at\s+least|minimum|min|starting\s+(?:at|from))\s*|(?:>=|>|≥)\s*){_money('a')}"
        ),
        False,
    ),
    # A budget is what the shopper will spend at most: "budget $50", "预算80元". (With a
    # bound word after it, "预算100元以上", the longer phrase wins.)
    (
        "max",
        re.compile(
            rf"{_START}(?:(?:my\s+|a\s+)?budget(?:\s+(?:of|is|:))?|预算\s*(?:是|为|在|:)?)\s*{_money('a')}"
        ),
        False,
    ),
    # "from" alone is a lower bound only with a currency: "from 2020" is not a price.
    ("min", re.compile(rf"{_START}{_EN_LEAD}from\s*{_money('a')}"), True),
    (
        "max",
        re.compile(
            rf"{_START}{_EN_LEAD}{_money('a')}\s*(?:or\s+(?:less|under|below|cheaper)|"
            rf"and\s+(?:under|below|less))(?![a-z])"
        ),
        False,
    ),
    (
        "max",
        re.compile(rf"{_START}{_EN_LEAD}{_money('a')}\s*(?:max|maximum|at\s+most)(?![a-z])"),
        True,
    ),
    (
        "min",
        re.compile(
            rf"{_START}{_EN_LEAD}{_money('a')}\s*(?:(?:and|or)\s+(?:up|above|over|more|higher)"
            rf"(?![a-z])|\+)"
        ),
        True,
    ),
    (
        "max",
        re.compile(rf"{_START}{_CN_LEAD}{_money('a')}\s*(?:以下|以内|之内|之下|封顶|内)"),
        False,
    ),
    ("min", re.compile(rf"{_START}{_CN_LEAD}{_money('a')}\s*(?:以上|起)"), False),
    (
        "max",
        re.compile(
            rf"{_START}{_CN_LEAD}(?:低于|不超过|不高于|不到|少于|小于|不多于|最多|最高|最贵)\s*{_money('a')}"
        ),
        False,
    ),
    (
        "min",
        re.compile(
            rf"{_START}{_CN_LEAD}(?:高于|超过|大于|多于|不低于|不少于|至少|最低|最少|起码)\s*{_money('a')}"
        ),
        False,
    ),
]

# The English words of the phrases above. Spelling correction restores typos of them ("undwr",
# "dollasr") instead of bending them to the nearest catalogue word ("collar"), which would
# also lose the price.
PRICE_WORDS: frozenset[str] = frozenset(
    """
    under below less than cheaper lower maximum max most more over above greater higher least
    minimum starting between from until till price prices priced costing cost costs budget
    dollar dollars bucks buck euro euros pounds
    """.split()
)

_AGE_BEFORE_RE = re.compile(
    r"(?<![a-z])(?:kids?|child|children|ages?|aged|bab(?:y|ies)|toddlers?|infants?|boys?|girls?|"
    r"teens?|years?|yrs?)\s*$"
)
_CONNECTOR_RE = re.compile(r"\s*(?:and|but|&|,|，|、|且|并且|而且)?\s*")


class _PriceMatch(NamedTuple):
    start: int
    end: int
    min: float | None
    max: float | None
    currency: str | None = None


# What each written currency sign or word means (ISO 4217). "¥" and "kr" are ambiguous; queries
# that write them come from Chinese and Swedish shoppers far more often than Japanese or
# Norwegian/Danish ones, whose "円" or "nok"/"dkk" are listed on their own.
CURRENCY_CODES = {
    "$": "USD", "us$": "USD", "usd": "USD", "dollar": "USD", "dollars": "USD", "buck": "USD", "bucks": "USD",
    "美元": "USD", "€": "EUR", "eur": "EUR", "euro": "EUR", "euros": "EUR", "£": "GBP", "gbp": "GBP",
    "chf": "CHF", "¥": "CNY", "rmb": "CNY", "yuan": "CNY", "元": "CNY", "块": "CNY", "块钱": "CNY",
    "人民币": "CNY", "₽": "RUB", "rub": "RUB", "₺": "TRY", "₹": "INR", "kr": "SEK", "sek": "SEK",
    "nok": "NOK", "dkk": "DKK", "pln": "PLN", "zł": "PLN",
}


def _chinese_amount(text: str) -> float | None:
    """Value of Chinese numerals: "一百" 100, "十五" 15, "两千五" 2500, "一万二千" 12000."""
    total = section = 0
    digit: int | None = None
    last_multiplier = 0
    for ch in text:
        if ch in _CN_DIGITS:
            # Digits written in a row ("一五零") are positional.
            digit = _CN_DIGITS[ch] if digit is None else digit * 10 + _CN_DIGITS[ch]
        elif ch == "万":
            total += (section + (digit or 0)) * 10_000 or 10_000
            section, digit, last_multiplier = 0, None, 10_000
        else:
            multiplier = _CN_MULTIPLIERS[ch]
            section += (1 if digit is None else digit) * multiplier
            digit, last_multiplier = None, multiplier
    if digit is not None:
        # "两千五" is 2500: a last digit after a multiplier counts one order of magnitude lower.
        if last_multiplier >= 100 and text[-2] in _CN_MULTIPLIERS:
            digit *= last_multiplier // 10
        section += digit
    value = float(total + section)
    return value if value > 0 else None


def _amount(text: str | None) -> float | None:
    if text is None:
        return None
    if text[-1] in _CN_MULTIPLIERS and text[0].isdigit():
        value = float(text[:-1].replace(",", "")) * _CN_MULTIPLIERS[text[-1]]
    elif not text[0].isdigit():
        return _chinese_amount(text)
    else:
        value = float(text.replace(",", ""))
    return value if math.isfinite(value) else None


def _price_matches(text: str) -> list[_PriceMatch]:
    """Every valid price phrase in `text`, possibly overlapping."""
    found: list[_PriceMatch] = []
    for kind, pattern, needs_currency in _PRICE_PATTERNS:
        for m in pattern.finditer(text):
            groups = m.groupdict()
            has_currency = any(
                groups.get(name) for name in ("acp", "acs", "bcp", "bcs", "kw", "kw2", "lead")
            )
            if needs_currency and not has_currency:
                continue
            if kind != "range" and not has_currency and _AGE_BEFORE_RE.search(text, 0, m.start()):
                continue  # "toys for kids under 5" is an age, not a price
            a = _amount(groups.get("a"))
            if a is None:
                continue
            written = next((groups[name] for name in ("acp", "acs", "bcp", "bcs") if groups.get(name)), None)
            currency = CURRENCY_CODES.get(written.strip()) if written else None
            if kind == "range":
                b = _amount(groups.get("b"))
                if b is None:
                    continue
                found.append(_PriceMatch(m.start(), m.end(), a, b, currency))
            elif kind == "max":
                found.append(_PriceMatch(m.start(), m.end(), None, a, currency))
            else:
                found.append(_PriceMatch(m.start(), m.end(), a, None, currency))
    return found


def price_span(text: str) -> tuple[PriceFilter, int, int] | None:
    matches = _price_matches(text)
    if not matches:
        return None
    # Leftmost phrase wins; at the same start, the longest ("from $20 to $50" over "from $20").
    matches.sort(key=lambda m: (m.start, -m.end))
    first = matches[0]
    low, high, start, end, currency = first.min, first.max, first.start, first.end, first.currency
    # A complementary bound right after it joins in: "over $20 and under $50", "50元以上100元以下".
    if (low is None) != (high is None):
        for m in matches:
            if m.start < end or not _CONNECTOR_RE.fullmatch(text, end, m.start):
                continue
            if low is None and m.min is not None and m.max is None:
                low, end, currency = m.min, m.end, currency or m.currency
            elif high is None and m.max is not None and m.min is None:
                high, end, currency = m.max, m.end, currency or m.currency
            break
    return PriceFilter(min=low, max=high, phrase=text[start:end], currency=currency), start, end


def extract_price(normalized: str) -> PriceFilter | None:
    """The first price bound or range expressed in normalized query text, or None.

    See the module docstring for the phrases understood. Bounds are returned as written
    (a reversed range "50 to 20" gives min=50, max=20); the caller validates them.
    """
    found = price_span(normalized)
    return found[0] if found else None
