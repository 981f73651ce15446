"""The deploy-time smoke check's child process: load a model and predict one typical row, under a memory limit.

A version whose prediction is arbitrary Python (an MLflow python_function model with its own code, or a pickle an
admin trusted) could hang or eat all memory. Serving it in the web process would find out the hard way: threads
stuck until the timeout, or the kernel killing the worker. So before such a version becomes a champion or a
challenger, `serving.smoke_refusal` runs this module in a separate process with a time limit (the parent's) and an
address-space limit (set here, after the libraries are imported, so only the model's own use counts). A hang or
memory exhaustion refuses the deployment and the previous version keeps serving. A model that merely raises on the
typical row is not refused: real requests may still suit it, and serving reports its errors per request.

It reads one JSON request on stdin, prints "ready" once Django and the libraries are set up, then one JSON line with
the outcome. It never touches the database. Exit codes: 0 it answered (or raised an ordinary error), 3 it ran out of
memory, 4 it could not be loaded (not a refusal: serving reports that per request, as it always did).
"""

from __future__ import annotations

import json
import resource
import sys

OUT_OF_MEMORY, NOT_LOADED = 3, 4


def _address_space_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> int:
    request = json.load(sys.stdin)
    # Set up like the web process that will serve it: a model's code may import the portal's own modules.
    import django

    django.setup()
    import mlflow.pyfunc

    from apps.deployments import protocol

    schema = protocol.Schema(request["inputs"])
    budget = int(request["memory_mb"]) * 1024 * 1024
    limit = _address_space_bytes() + budget
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    print("ready", flush=True)  # the parent's clock for the model starts now, not while Python imports libraries
    try:
        model = mlflow.pyfunc.load_model(request["location"])
    except MemoryError:
        print(json.dumps({"outcome": "out of memory while loading"}))
        return OUT_OF_MEMORY
    except Exception as exc:
        print(json.dumps({"outcome": f"could not be loaded: {type(exc).__name__}: {str(exc)[:300]}"}))
        return NOT_LOADED
    try:
        frame = schema.rows_frame([request["row"]]) if schema.names else request["row"]
        model.predict(frame)
    except MemoryError:
        print(json.dumps({"outcome": "out of memory while predicting"}))
        return OUT_OF_MEMORY
    except Exception as exc:  # its own error on this row: not what this check is for
        print(json.dumps({"outcome": f"raised {type(exc).__name__}"}))
        return 0
    print(json.dumps({"outcome": "answered"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
