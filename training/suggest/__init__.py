"""Autocomplete: the offline evaluation of query understanding's suggestion index
(`eval_suggest.py`, `shelfwise eval suggest`) on a real query log, against a plain prefix
baseline, with its data and metrics in `suggest_data.py`."""
