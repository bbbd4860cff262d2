"""What a query says about price beyond a bound: a wish for something cheap, and the currency
a bound is written in.

- Low-price intent: "cheap", "budget", "affordable", "便宜", "实惠", ... are a soft preference
  for lower prices (ranking favours cheaper relevant products), not a bound and not words to
  match: they leave the search text, as a price phrase does ("cheap gift for my wife" searches
  "gift for my wife").
- Currency: a bound written in another currency than the catalogue's ("100元以内" in a US
  dollar catalogue) is converted at a configured rate (`SHELFWISE_CURRENCY_RATES`), or, with no
  rate, not applied; either way a note in the response says so. A bound with no currency
  written is read in the catalogue's currency.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

from services.query_understanding.price_phrases import PriceFilter

# English words as whole words (with their comparative/superlative); Chinese ones as written.
LOW_PRICE_WORDS_EN = (
    "cheap", "cheapest", "inexpensive", "affordable", "budget", "bargain", "low-cost", "low cost",
    "low-priced", "low priced", "economical",
)
LOW_PRICE_WORDS_ZH = ("便宜", "实惠", "平价", "低价", "廉价", "划算")
_LOW_PRICE_RE = re.compile(
    r"(?<![\w-])(?:" + "|".join(re.escape(w) for w in sorted(LOW_PRICE_WORDS_EN, key=len, reverse=True)) + r")(?![\w-])"
    + "|" + "|".join(re.escape(w) for w in LOW_PRICE_WORDS_ZH)
)
def low_price_intent(text: str) -> tuple[bool, str]:
    """(whether the text asks for something cheap, the text without those words). A query of
    nothing but such words ("cheap") keeps them: there is nothing else to search for."""
    stripped = _LOW_PRICE_RE.sub(" ", text)
    if stripped == text:
        return False, text
    remaining = " ".join(stripped.split())
    return True, remaining if remaining else text


@dataclass(frozen=True)
class CurrencyRates:
    """The value of one unit of each currency in a common unit (any: only ratios count), e.g.
    SHELFWISE_CURRENCY_RATES="USD=1,CNY=0.14,EUR=1.08"."""

    rates: Mapping[str, float]

    @classmethod
    def parse(cls, raw: str) -> "CurrencyRates":
        rates = {}
        for item in filter(None, (part.strip() for part in raw.split(","))):
            code, _, value = item.partition("=")
            try:
                rate = float(value)
            except ValueError:
                rate = float("nan")
            if len(code.strip()) != 3 or not code.strip().isalpha() or not rate > 0 or rate == float("inf"):
                raise ValueError(f"SHELFWISE_CURRENCY_RATES: {item!r} is not CODE=positive number (e.g. CNY=0.14)")
            rates[code.strip().upper()] = rate
        return cls(rates)

    def convert(self, amount: float, source: str, target: str) -> float | None:
        if source == target:
            return amount
        if source not in self.rates or target not in self.rates:
            return None
        return amount * self.rates[source] / self.rates[target]


def _written(price: PriceFilter) -> str:
    return price.phrase.strip()


def price_in_catalogue_currency(
    price: PriceFilter, catalogue_currency: str, rates: CurrencyRates
) -> tuple[float | None, float | None, str]:
    """(min, max, note): the bounds in the catalogue's currency, and a note when they were
    converted or dropped ("" when the bound was read as written)."""
    if not price.currency or not catalogue_currency or price.currency == catalogue_currency:
        return price.min, price.max, ""
    converted = [None if bound is None else rates.convert(bound, price.currency, catalogue_currency)
                 for bound in (price.min, price.max)]
    if any(value is None for value, bound in zip(converted, (price.min, price.max)) if bound is not None):
        return None, None, (
            f"\"{_written(price)}\" is in {price.currency} and the catalogue prices in {catalogue_currency}; with no "
            f"exchange rate configured (SHELFWISE_CURRENCY_RATES) it was not used as a price filter"
        )
    low, high = (None if value is None else round(value, 2) for value in converted)
    shown = " to ".join(f"{value:g}" for value in (low, high) if value is not None)
    return low, high, (
        f"\"{_written(price)}\" read as {shown} {catalogue_currency} "
        f"(1 {price.currency} = {rates.convert(1.0, price.currency, catalogue_currency):.4g} {catalogue_currency})"
    )
