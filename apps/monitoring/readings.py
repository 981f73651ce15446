"""Plain-language readings: one sentence per chart, computed from the same numbers the chart draws.

Pure functions of plain numbers (no database), so each sentence is tested on its own. Feature names are wrapped
in backticks; the `reading` template filter shows them as code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import Decimal

NO_REQUESTS = "No requests in this period yet."
NO_REFERENCE = ("Drift needs reference data: link the training dataset to the champion version, or choose a "
                "reference dataset in the deployment's monitoring settings.")
STEADY = 0.05  # changes smaller than 5 % read as "held steady"
PSI_MODERATE, PSI_HIGH = 0.1, 0.25
TOO_FEW = "too_few"  # drift.compare's verdict when a window has too few values for one
CURRENCIES = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "CAD": "CA$", "AUD": "A$"}


# --- Formatting ------------------------------------------------------------------------------------------------


def count(n: float | int) -> str:
    return f"{int(round(n)):,}"


def percent(share: float) -> str:
    """0.38 → "38%", 0.004 → "0.4%", 0 → "0%"."""
    value = share * 100
    if value == 0:
        return "0%"
    if abs(value) < 10 and round(value, 1) != round(value):
        return f"{value:.1f}%"
    return f"{round(value):.0f}%"


def milliseconds(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:.1f} s"
    if value < 10:
        return f"{value:.1f} ms"
    return f"{round(value):.0f} ms"


def number(value: float) -> str:
    """Three significant digits, no exponent for ordinary magnitudes: 0.04321 → 0.0432, 1234.5 → 1,234."""
    if value == 0 or not math.isfinite(value):
        return "0" if value == 0 else str(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    digits = max(0, 2 - int(math.floor(math.log10(abs(value)))))
    return f"{value:.{digits}f}"


def psi(value: float) -> str:
    return f"{value:.2f}"


def money(amount: float | Decimal, unit: str = "USD") -> str:
    """≈ $12,400 style: three significant digits at 1,000 and more, cents below 100."""
    amount = float(amount)
    if amount >= 1000:
        amount = round(amount, -int(math.floor(math.log10(amount))) + 2)
        text = f"{amount:,.0f}"
    elif amount >= 100:
        text = f"{amount:,.0f}"
    else:
        text = f"{amount:,.2f}"
    symbol = CURRENCIES.get((unit or "").upper())
    return f"{symbol}{text}" if symbol else f"{text} {unit}".strip()


def verdict(value: float | None) -> str:
    if value is None:
        return "unknown"
    if value >= PSI_HIGH:
        return "high"
    return "moderate" if value >= PSI_MODERATE else "stable"


def period_words(hours: float) -> tuple[str, str]:
    """How to say the current window and the one before it: (\"this week\", \"the week before\")."""
    if abs(hours - 6) < 0.5:
        return "in the last 6 hours", "the 6 hours before"
    if abs(hours - 24) < 0.5:
        return "in the last 24 hours", "the day before"
    if abs(hours - 24 * 7) < 1:
        return "this week", "the week before"
    if abs(hours - 24 * 30) < 1:
        return "in the last 30 days", "the 30 days before"
    return "in this period", "the period before"


# --- Deployment page -------------------------------------------------------------------------------------------


def _change(current: float, previous: float) -> float:
    return current / previous - 1


def traffic(current: int, previous: int | None, *, period: str = "in this period",
            before: str = "the period before", what: str = "Predictions per day") -> str:
    """"Predictions per day fell 38% this week (620 against 1,000 the week before)." Equal-length windows, so the
    change of the totals is the change per day."""
    if not current and not previous:
        return NO_REQUESTS
    if not current:
        return f"No requests {period}, after {count(previous)} {before}."
    if not previous:
        return f"{count(current)} requests {period}; none {before} to compare with."
    change = _change(current, previous)
    if change > 9:  # a percentage like 330,900% says less than the two counts
        return (f"{what} grew from almost nothing {period}: {count(current)} requests, against {count(previous)} "
                f"{before}.")
    if abs(change) < STEADY:
        return f"{what} held steady {period} ({count(current)} requests, {count(previous)} {before})."
    direction = "rose" if change > 0 else "fell"
    return f"{what} {direction} {percent(abs(change))} {period} ({count(current)} against {count(previous)} {before})."


def latency(p50: float | None, p95: float | None, p99: float | None = None, *, requests: int = 0) -> str:
    """"95% of requests were answered within 41 ms (half within 12 ms)."""
    if not requests:
        return NO_REQUESTS
    if p95 is None:
        return "Response times are not known for this period."
    sentence = f"95% of requests were answered within {milliseconds(p95)}"
    if p50 is not None:
        sentence += f" (half within {milliseconds(p50)})"
    if p99 is not None and p99 > 2 * p95:
        sentence += f"; the slowest 1% took over {milliseconds(p99)}"
    return sentence + "."


def errors(failed: int, requests: int) -> str:
    if not requests:
        return NO_REQUESTS
    if not failed:
        return "No errors in this period."
    sentence = f"{percent(failed / requests)} of requests failed ({count(failed)} of {count(requests)})"
    if failed / requests >= 0.05:
        sentence += ": the prediction log shows each error's message"
    return sentence + "."


def quality(missing: float | None, out_of_range: float | None, *, missing_feature: str | None = None,
            out_of_range_feature: str | None = None, requests: int = 0) -> str:
    """Worst missing share and worst out-of-range share, each with its feature when known."""
    if not requests:
        return NO_REQUESTS
    parts = []
    if missing:
        where = f"`{missing_feature}`" if missing_feature else "the worst feature"
        parts.append(f"{where} is missing in {percent(missing)} of rows")
    if out_of_range:
        where = f"`{out_of_range_feature}`" if out_of_range_feature else "the worst feature"
        parts.append(f"{percent(out_of_range)} of {where} values are outside the range seen in the reference")
    if not parts:
        if missing is None and out_of_range is None:
            return "Data quality is not known for this period."
        return "No missing or out-of-range values in this period."
    sentence = "; ".join(parts)
    return sentence[0].upper() + sentence[1:] + "." if not sentence.startswith("`") else sentence + "."


def drift(features: Sequence[dict], *, has_reference: bool = True, reason: str = "") -> str:
    """"`income` has shifted: PSI 0.31, high." from drift_report()["features"] (worst first)."""
    if not has_reference:
        return reason or NO_REFERENCE
    measured = [f for f in features if f.get("psi") is not None and f.get("verdict") != TOO_FEW]
    if not measured:
        return "Too few requests in this period to compare with the reference."
    worst = max(measured, key=lambda f: f["psi"])
    level = worst.get("verdict") or verdict(worst["psi"])
    if level == "stable":
        return f"No feature has shifted: the largest PSI is {psi(worst['psi'])} (`{worst['name']}`)."
    others = sum(1 for f in measured if f is not worst and (f.get("verdict") or verdict(f["psi"])) != "stable")
    sentence = f"`{worst['name']}` has shifted: PSI {psi(worst['psi'])}, {level}"
    if others:
        sentence += f" (and {others} more feature{'s' if others > 1 else ''})"
    return sentence + "."


def feature_shift(feature: dict) -> str:
    """One drifted feature: its PSI and the bin whose share moved most."""
    value = feature.get("psi")
    if value is None or feature.get("verdict") == TOO_FEW:
        return f"Too few values of `{feature['name']}` in this period to compare."
    level = feature.get("verdict") or verdict(value)
    sentence = f"`{feature['name']}`: PSI {psi(value)}, {level}"
    reference, current = feature.get("reference_shares") or [], feature.get("current_shares") or []
    labels = feature.get("labels") or [str(i + 1) for i in range(len(reference))]
    if reference and len(reference) == len(current) and level != "stable":
        i = max(range(len(reference)), key=lambda k: abs(current[k] - reference[k]))
        sentence += (f". Most change in {labels[i]}: {percent(current[i])} of values now, "
                     f"{percent(reference[i])} in the reference")
    return sentence + "."


def prediction_drift(predictions: dict | None, *, has_reference: bool = True) -> str:
    if not has_reference:
        return ("Prediction drift needs reference data: the model's predictions on the reference dataset are "
                "computed when it is linked.")
    value = (predictions or {}).get("psi")
    if value is None or (predictions or {}).get("verdict") == TOO_FEW:
        return "Too few predictions in this period to compare with the reference."
    level = predictions.get("verdict") or verdict(value)
    if level == "stable":
        return f"Predictions look like the reference: PSI {psi(value)}, stable."
    return f"Predictions have shifted from the reference: PSI {psi(value)}, {level}."


def heatmap(data: dict, *, bucket_word: str = "buckets") -> str:
    """Which feature drifted (PSI ≥ 0.25) in the most time buckets."""
    rows = data.get("psi") or []
    names = data.get("features") or []
    measured = [(name, [v for v in row if v is not None]) for name, row in zip(names, rows, strict=False)]
    if not any(values for _, values in measured):
        return "Too few requests per bucket to compare with the reference yet."
    high = sorted(((sum(1 for v in values if v >= PSI_HIGH), len(values), name) for name, values in measured
                   if values), reverse=True)
    hits, total, name = high[0]
    if not hits:
        worst = max((max(values), name) for name, values in measured if values)
        return (f"No feature drifted strongly in any of the {bucket_word}: the largest PSI is {psi(worst[0])} "
                f"(`{worst[1]}`).")
    return f"`{name}` drifted strongly (PSI ≥ {PSI_HIGH}) in {hits} of {total} {bucket_word}."


def performance(label: str, values: Sequence[float | None], *, labelled: int, unit: str = "",
                higher_is_better: bool = True, overall: float | None = None) -> str:
    """"Accuracy is 87% on 1,204 labelled predictions; it went from 91% early in the period to 84% at the end
    (worse)." The headline is the whole period's value (`overall`, else the last bucket's); the trend compares the
    first and last buckets that had enough labels to say."""
    known = [v for v in values if v is not None]
    headline = overall if overall is not None else (known[-1] if known else None)
    if not labelled or headline is None:
        return ("No labels yet: send the true outcomes through the feedback API or upload a CSV, and accuracy "
                "appears here.")
    show = percent if unit == "%" else number
    sentence = f"{label} is {show(headline)} on {count(labelled)} labelled prediction{'s' if labelled != 1 else ''}"
    if len(known) > 1:
        first, last = known[0], known[-1]
        if abs(last - first) > max(0.02 * abs(first), 1e-9):
            better = (last > first) == higher_is_better
            sentence += f"; it went from {show(first)} early in the period to {show(last)} at the end"
            sentence += "" if better else " (worse)"
    return sentence + "."


# --- Operations Center and impact --------------------------------------------------------------------------------


def adoption(weekly: Sequence[int], *, weeks: int = 4) -> str:
    """"Use grew 24% over the last 4 weeks": the latest week against the first of the window."""
    if not weekly or not any(weekly):
        return f"No use in the last {weeks} weeks yet."
    first, last = weekly[0], weekly[-1]
    if not first:
        return f"New in the last {weeks} weeks: {count(last)} requests in the latest week."
    change = _change(last, first)
    if abs(change) < STEADY:
        return f"Use held steady over the last {weeks} weeks ({count(last)} requests in the latest week)."
    direction = "grew" if change > 0 else "fell"
    return (f"Use {direction} {percent(abs(change))} over the last {weeks} weeks "
            f"({count(last)} requests in the latest week).")


def callers(daily: Sequence[int]) -> str:
    if not daily or not any(daily):
        return "No callers yet."
    active = [n for n in daily if n]
    average = f"{sum(active) / len(active):.1f}".removesuffix(".0")
    return (f"On average {average} caller{'' if average == '1' else 's'} a day on the days with use; "
            f"{count(max(daily))} on the busiest day.")


def value(predictions: int, per_prediction: float | Decimal | None, unit: str = "USD", *,
          period: str = "this month") -> str:
    """"≈ $12,400 this month at $0.50 per prediction"."""
    if per_prediction is None:
        return ""
    rate = money(per_prediction, unit)
    if not predictions:
        return f"No predictions {period} yet (valued at {rate} per prediction)."
    return f"≈ {money(float(per_prediction) * predictions, unit)} {period} at {rate} per prediction."
