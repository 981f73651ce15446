"""Evidently's data drift report on two Parquet files: run by bench/bench_monitoring.py inside Evidently's own
virtualenv (Evidently needs pandas<3 and plotly<6, which the portal's environment does not have).

    <venv>/bin/python bench/monitoring_evidently.py reference.parquet current.parquet warm.parquet '{"numerical":
        [...], "categorical": [...]}'

Imports, then one warm-up report on the small `warm` file (as a long-lived worker would have run before), then the
clock: `pandas.read_parquet` of both files, `Dataset.from_pandas` with the column kinds given (so Evidently does not
have to guess them), and `Report([DataDriftPreset()]).run(current, reference)` — the computation, without
rendering HTML. Prints one JSON line: seconds (read, compute), this process's own peak RSS (VmHWM), Evidently's
version and the verdict per column (drift detected or not, the method, its score and threshold).
"""

from __future__ import annotations

import json
import resource
import sys
import time


def peak_mb() -> float:
    """This process's own peak RSS: VmHWM (ru_maxrss would carry over the parent's peak through fork and exec)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def verdicts(snapshot) -> dict:
    """{column: {"drifted", "method", "score", "threshold"}} from a snapshot of the DataDriftPreset."""
    found = {}
    for metric in snapshot.dict()["metrics"]:
        config = metric.get("config") or {}
        if not str(config.get("type", "")).endswith("ValueDrift"):
            continue
        method, threshold, score = str(config.get("method", "")), config.get("threshold"), metric.get("value")
        # p-value methods (small samples: K-S, chi-square, Z-test) flag below the threshold; distances at or above.
        drifted = score < threshold if "p_value" in method else score >= threshold
        found[config["column"]] = {"drifted": bool(drifted), "method": method, "score": score, "threshold": threshold}
    return found


def main() -> None:
    reference_path, current_path, warm_path, kinds = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    began = time.perf_counter()
    import evidently
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    imported = time.perf_counter()
    definition = DataDefinition(numerical_columns=kinds["numerical"], categorical_columns=kinds["categorical"])

    def report(reference, current):
        return Report([DataDriftPreset()]).run(Dataset.from_pandas(current, data_definition=definition),
                                              Dataset.from_pandas(reference, data_definition=definition))

    warm = pd.read_parquet(warm_path)
    report(warm, warm)
    start = time.perf_counter()
    reference = pd.read_parquet(reference_path)
    current = pd.read_parquet(current_path)
    read = time.perf_counter()
    snapshot = report(reference, current)
    done = time.perf_counter()
    print(json.dumps({"tool": f"evidently {evidently.__version__}", "pandas": pd.__version__,
                      "import_s": imported - began, "read_s": read - start, "compute_s": done - read,
                      "seconds": done - start, "peak_rss_mb": peak_mb(), "rows": [len(reference), len(current)],
                      "columns": verdicts(snapshot)}))


if __name__ == "__main__":
    main()
