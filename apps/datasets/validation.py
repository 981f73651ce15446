"""Checking a dataset version against an expected schema and a reference profile (pure functions).

Used to compare two versions of a dataset, and by later features to check data against a model's
signature and its training data. Works on stored profiles only: nothing re-reads the files.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

PASS, WARN, FAIL = "pass", "warn", "fail"
_RANK = {PASS: 0, WARN: 1, FAIL: 2}

# Types that may stand in for each other without failing a check (an int column read as float, say).
_COMPATIBLE = {
    frozenset({"integer", "float"}),
    frozenset({"categorical", "text"}),
    frozenset({"boolean", "categorical"}),
}


@dataclass
class Finding:
    column: str | None
    kind: (
        str  # missing_column | extra_column | type_mismatch | out_of_range | unseen_categories | missing_spike | shift
    )
    severity: str  # warn | fail
    message: str
    details: dict = field(default_factory=dict)


@dataclass
class ValidationReport:
    verdict: str
    summary: str
    findings: list[Finding]
    shifts: dict[str, float | None]  # per-column population stability index against the reference

    def as_dict(self) -> dict:
        return {
            "verdict": self.verdict,
            "summary": self.summary,
            "shifts": self.shifts,
            "findings": [asdict(f) for f in self.findings],
        }


def _columns(profile: dict) -> dict[str, dict]:
    return {c["name"]: c for c in (profile or {}).get("columns", [])}


def psi(expected: list[float], actual: list[float]) -> float | None:
    """Population stability index of two distributions over the same bins (counts or shares)."""
    if not expected or len(expected) != len(actual):
        return None
    e_total, a_total = sum(expected), sum(actual)
    if e_total <= 0 or a_total <= 0:
        return None
    value = 0.0
    for e, a in zip(expected, actual, strict=True):
        e_share, a_share = max(e / e_total, 1e-4), max(a / a_total, 1e-4)
        value += (a_share - e_share) * math.log(a_share / e_share)
    return round(value, 4)


def _shift(reference: dict, current: dict) -> float | None:
    """PSI on the reference's histogram bins (numbers) or top values (categories)."""
    ref_hist, cur_hist = reference.get("histogram") or {}, current.get("histogram") or {}
    if ref_hist.get("edges") and cur_hist.get("edges") == ref_hist.get("edges"):
        return psi(ref_hist["counts"], cur_hist["counts"])
    if ref_hist.get("edges") and current.get("numeric") and cur_hist.get("edges"):
        return psi(ref_hist["counts"], _rebin(cur_hist, ref_hist["edges"]))
    if reference.get("type") not in {"categorical", "boolean"}:
        return None  # identifiers and free text: every value differs, so a shift score means nothing
    ref_top = {t["value"]: t["count"] for t in reference.get("top_values") or []}
    cur_top = {t["value"]: t["count"] for t in current.get("top_values") or []}
    if ref_top and cur_top:
        keys = sorted(set(ref_top) | set(cur_top))
        return psi([ref_top.get(k, 0) for k in keys], [cur_top.get(k, 0) for k in keys])
    return None


def _rebin(histogram: dict, edges: list[float]) -> list[float]:
    """Spread a histogram's counts onto other bin edges, assuming values are uniform within a bin."""
    counts = [0.0] * (len(edges) - 1)
    for lo, hi, n in zip(histogram["edges"][:-1], histogram["edges"][1:], histogram["counts"], strict=False):
        width = hi - lo
        for i in range(len(counts)):
            overlap = min(hi, edges[i + 1]) - max(lo, edges[i])
            if width <= 0:
                if edges[i] <= lo <= edges[i + 1]:
                    counts[i] += n
                    break
            elif overlap > 0:
                counts[i] += n * overlap / width
    return counts


def validate(
    profile: dict,
    *,
    expected_schema: list[dict] | None = None,
    reference: dict | None = None,
    shift_warn: float = 0.1,
    shift_fail: float = 0.25,
) -> ValidationReport:
    """Report what differs between `profile` and the expected schema / reference profile.

    expected_schema: [{"name", "type"}]; reference: another stored profile (e.g. the training data's).
    """
    findings: list[Finding] = []
    current = _columns(profile)
    expected = {c["name"]: c["type"] for c in (expected_schema or [])} or {
        name: c["type"] for name, c in _columns(reference or {}).items()
    }
    ref_columns = _columns(reference or {})
    for name, kind in expected.items():
        if name not in current:
            findings.append(Finding(name, "missing_column", FAIL, f"Column `{name}` is missing."))
            continue
        actual = current[name]["type"]
        if actual != kind:
            compatible = frozenset({actual, kind}) in _COMPATIBLE
            findings.append(
                Finding(
                    name,
                    "type_mismatch",
                    WARN if compatible else FAIL,
                    f"`{name}` is {actual}, expected {kind}.",
                    {"expected": kind, "actual": actual},
                )
            )
    for name in current:
        if expected and name not in expected:
            findings.append(Finding(name, "extra_column", WARN, f"Column `{name}` is new (not expected)."))
    shifts: dict[str, float | None] = {}
    for name, ref in ref_columns.items():
        cur = current.get(name)
        if cur is None or cur.get("hidden") or ref.get("hidden"):
            continue
        _compare_column(name, ref, cur, findings)
        shifts[name] = _shift(ref, cur)
        if shifts[name] is not None and shifts[name] >= shift_warn:
            severity = FAIL if shifts[name] >= shift_fail else WARN
            findings.append(
                Finding(
                    name,
                    "shift",
                    severity,
                    f"The distribution of `{name}` has shifted (PSI {shifts[name]:.2f}).",
                    {"psi": shifts[name]},
                )
            )
    verdict = max((f.severity for f in findings), key=_RANK.__getitem__, default=PASS)
    return ValidationReport(verdict, _summary(verdict, findings), findings, shifts)


def _compare_column(name: str, ref: dict, cur: dict, findings: list[Finding]) -> None:
    ref_num, cur_num = ref.get("numeric"), cur.get("numeric")
    ranges_known = bool(ref_num and cur_num) and None not in (
        ref_num.get("min"), ref_num.get("max"), cur_num.get("min"), cur_num.get("max"))
    if ranges_known and (cur_num["min"] < ref_num["min"] or cur_num["max"] > ref_num["max"]):
        findings.append(
            Finding(
                name,
                "out_of_range",
                WARN,
                f"`{name}` has values from {cur_num['min']:g} to {cur_num['max']:g}, outside the "
                f"reference range {ref_num['min']:g} to {ref_num['max']:g}.",
                {"reference": [ref_num["min"], ref_num["max"]], "actual": [cur_num["min"], cur_num["max"]]},
            )
        )
    if (
        ref.get("type") in {"categorical", "boolean"}
        and ref.get("distinct_is_exact")
        and ref.get("top_values")
        and len(ref["top_values"]) >= (ref.get("distinct") or 0)
    ):
        known = {t["value"] for t in ref["top_values"]}
        unseen = [t["value"] for t in cur.get("top_values") or [] if t["value"] not in known]
        if unseen:
            findings.append(
                Finding(
                    name,
                    "unseen_categories",
                    WARN,
                    f"`{name}` has categories not in the reference: {', '.join(map(str, unseen[:5]))}.",
                    {"unseen": unseen[:20]},
                )
            )
    ref_missing, cur_missing = ref.get("missing_pct") or 0.0, cur.get("missing_pct") or 0.0
    if cur_missing >= ref_missing + 10 or (ref_missing > 0 and cur_missing >= 2 * ref_missing + 5):
        findings.append(
            Finding(
                name,
                "missing_spike",
                FAIL if cur_missing >= ref_missing + 30 else WARN,
                f"{cur_missing:.0f}% of `{name}` is missing (reference: {ref_missing:.0f}%).",
                {"reference_pct": ref_missing, "actual_pct": cur_missing},
            )
        )


def _summary(verdict: str, findings: list[Finding]) -> str:
    if verdict == PASS:
        return "The data matches: same columns and types, no notable shift."
    fails = [f for f in findings if f.severity == FAIL]
    warns = [f for f in findings if f.severity == WARN]
    parts = []
    if fails:
        parts.append(f"{len(fails)} problem(s) that need fixing, e.g. {fails[0].message}")
    if warns:
        parts.append(f"{len(warns)} thing(s) to check, e.g. {warns[0].message}")
    return " ".join(parts)
