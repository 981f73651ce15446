"""A deployment's model served on its own: the scoring server of an exported package (shipped as `serve.py`).

Standard library HTTP server plus MLflow, pandas and numpy; no Django and nothing from the portal except
`protocol.py`, shipped next to this file, so the package parses payloads and checks the signature exactly as
the portal's invocations endpoint does and answers the same predictions and the same error bodies.

    python serve.py --host 0.0.0.0 --port 8080

POST /invocations (MLflow's path) or /api/v1/deployments/<slug>/invocations (the portal's);
GET /ping and /health. No authentication: put it behind your own gateway.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import signal
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # protocol.py is a sibling, whatever the working directory

import predictors  # noqa: E402  (the portal's way of running the model, copied into the package)
import protocol  # noqa: E402  (the portal's own payload parser, copied into the package)

logger = logging.getLogger("serve")

DEFAULT_MAX_ROWS = 10_000
DEFAULT_MAX_BODY_BYTES = 20 * 1024 * 1024
DEFAULT_TIMEOUT_SECONDS = 30


class ModelChanged(Exception):
    """The model files are not the ones the manifest lists: refuse to load them (they may carry code)."""


def read_manifest(root: Path) -> dict:
    path = root / "MANIFEST.json"
    return json.loads(path.read_text()) if path.is_file() else {}


# With model/: what runs or is loaded. README, Dockerfile and requirements.txt may be edited (a local index, say).
RUNS = ("serve.py", "protocol.py", "predictors.py")


def verify(root: Path, manifest: dict) -> int:
    """Check what runs or loads (this server, the parser, the model) against MANIFEST.json; the number checked."""
    files = {name: digest for name, digest in (manifest.get("files") or {}).items()
             if name in RUNS or name.startswith("model/")}
    for name, expected in files.items():
        path = root / name
        if not path.is_file():
            raise ModelChanged(f"{name} is missing from the package.")
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        if digest.hexdigest() != expected:
            raise ModelChanged(f"{name} does not match the SHA-256 in MANIFEST.json: it was changed after export.")
    model_dir = root / "model"
    listed = {name for name in files if name.startswith("model/")}
    extra = sorted(p.relative_to(root).as_posix() for p in model_dir.rglob("*")
                   if p.is_file() and p.relative_to(root).as_posix() not in listed) if listed else []
    if extra:
        raise ModelChanged(f"{extra[0]} is in model/ but not in MANIFEST.json: it was added after export.")
    return len(files)


class Scorer:
    """The model, loaded once, predicting on a DataFrame already checked against its signature, by the same
    path the portal takes (`predictors.choose`, shipped beside this file): same answers, same speed."""

    def __init__(self, model_dir: Path, typical: dict | None = None):
        import mlflow.pyfunc

        self.pyfunc = mlflow.pyfunc.load_model(str(model_dir))
        signature = self.pyfunc.metadata.signature
        raw = signature.to_dict().get("inputs") if signature is not None else None
        # The same {"name", "type", "required"} columns the portal keeps as the version's signature.
        self.inputs = [c for c in (json.loads(raw) if raw else []) if c.get("name")]
        self.schema = protocol.Schema(self.inputs)
        self._predict, self.path = predictors.choose(self.pyfunc, self.schema, typical)
        self.inline_rows = predictors.inline_rows(self._predict)

    def predict(self, frame):
        return self._predict(frame)


class PredictTimeout(Exception):
    pass


class App:
    """What the handler needs: the scorer, the limits, the routes, a pool to cut off hung predictions."""

    def __init__(self, scorer: Scorer, *, manifest: dict, max_rows: int, max_body_bytes: int, timeout: float):
        self.scorer = scorer
        self.manifest = manifest
        self.max_rows, self.max_body_bytes, self.timeout = max_rows, max_body_bytes, timeout
        deployment = manifest.get("deployment") or {}
        model = manifest.get("model") or {}
        self.slug = deployment.get("slug")
        self.label = f"{model['slug']} v{model['version']}" if model.get("slug") else "model"
        self.shown_paths = ["/invocations"] + ([f"/api/v1/deployments/{self.slug}/invocations"] if self.slug else [])
        self.invocation_paths = frozenset(self.shown_paths + [p + "/" for p in self.shown_paths[1:]])
        self._pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="predict")
        self._pool_lock = threading.Lock()
        self._hung = 0

    def run_model(self, frame):
        if len(frame) <= self.scorer.inline_rows:  # a bounded forest walk: no thread hand-off (as in the portal)
            return self.scorer.predict(frame)
        future = self._pool.submit(self.scorer.predict, frame)
        try:
            return future.result(timeout=self.timeout)
        except FutureTimeout:
            with self._pool_lock:  # as in the portal: if hung predictions fill half the pool, start a fresh one
                self._hung += 1
                if self._hung >= 16:
                    self._pool, self._hung = ThreadPoolExecutor(max_workers=32, thread_name_prefix="predict"), 0
            raise PredictTimeout from None

    def health(self) -> dict:
        model = self.manifest.get("model") or {}
        return {"status": "ok", "deployment": self.slug, "model": model.get("name"), "version": model.get("version"),
                "artifact_sha256": model.get("artifact_sha256"), "inputs": self.scorer.inputs}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every answer carries a Content-Length
    disable_nagle_algorithm = True  # TCP_NODELAY: small answers are not held back waiting for an ACK
    timeout = 75  # an idle keep-alive connection gives its thread back after this many seconds
    server_version = "portal-package"
    sys_version = ""  # no Python version in the Server header
    app: App  # set by serve()

    # --- answers ------------------------------------------------------------------------------------------

    def _send(self, status: int, content: bytes, *, content_type: str = "application/json", headers=None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(content)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(content)

    def _json(self, status: int, body: dict, *, request_id: str = "", headers=None) -> None:
        headers = dict(headers or {})
        if request_id:
            headers["X-Request-ID"] = request_id
        self._send(status, json.dumps(body).encode(), headers=headers)

    def _error(self, status: int, detail: str, *, request_id: str = "", field: str | None = None, headers=None):
        body = {"detail": detail}
        if field:
            body["errors"] = {field: [detail]}
        if request_id:
            body["request_id"] = request_id
        self._json(status, body, request_id=request_id, headers=headers)

    # --- the request body -----------------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        limit = self.app.max_body_bytes
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked(limit)
        length = (self.headers.get("Content-Length") or "0").strip()
        if not length.isdigit():
            self.close_connection = True
            raise protocol.PayloadError("Content-Length is not a number.", field="body")
        if int(length) > limit:
            self.close_connection = True  # the body stays unread: this connection cannot carry another request
            raise protocol.PayloadError(f"The body is {int(length):,} bytes; the limit is {limit:,}. Split the "
                                        "request or use batch scoring.", field="body", status=413)
        return self.rfile.read(int(length))

    def _read_chunked(self, limit: int) -> bytes:
        parts, total = [], 0
        while True:
            line = self.rfile.readline(1024).split(b";")[0].strip()
            try:
                size = int(line, 16)
            except ValueError:
                self.close_connection = True
                raise protocol.PayloadError("The chunked body is malformed.", field="body") from None
            if size == 0:
                while self.rfile.readline(1024).strip():  # trailers
                    pass
                return b"".join(parts)
            total += size
            if total > limit:
                self.close_connection = True
                raise protocol.PayloadError(f"The body is over the limit of {limit:,} bytes. Split the request or "
                                            "use batch scoring.", field="body", status=413)
            parts.append(self.rfile.read(size))
            self.rfile.readline(8)

    # --- routes ---------------------------------------------------------------------------------------------

    def _path(self) -> str:
        return self.path.split("?", 1)[0]

    def do_GET(self):  # noqa: N802 (http.server's naming)
        path = self._path()
        if path == "/ping":
            self._send(200, b"\n", content_type="text/plain; charset=utf-8")
        elif path == "/health":
            self._json(200, self.app.health())
        elif path in self.app.invocation_paths:
            self._error(405, "Use POST with a JSON or CSV body.", headers={"Allow": "POST"})
        else:
            self._not_found()

    do_HEAD = do_GET  # noqa: N815

    def do_POST(self):  # noqa: N802
        if self._path() not in self.app.invocation_paths:
            self.close_connection = True
            self._not_found()
            return
        self._invoke()

    def _not_found(self):
        self._error(404, f"No such path: POST to {' or '.join(self.app.shown_paths)}; GET /ping or /health.")

    def _invoke(self) -> None:
        app = self.app
        request_id = uuid.uuid4().hex
        try:
            body = self._read_body()
            table = protocol.parse(body, self.headers.get("Content-Type", ""))
            frame = app.scorer.schema.frame(table, max_rows=app.max_rows)
        except protocol.PayloadError as exc:
            self._json(exc.status, {**exc.as_json(), "request_id": request_id}, request_id=request_id)
            return
        try:
            content = protocol.dumps({"predictions": protocol.predictions_list(app.run_model(frame))})
        except PredictTimeout:
            self._error(504, f"The model did not answer within {app.timeout:g} s and was cut off. Try fewer rows.",
                        request_id=request_id)
            return
        except Exception as exc:  # the model failed on checked input: its fault, not the caller's
            logger.info("%s failed: %s", app.label, exc)
            self._error(502, f"The model ({app.label}) failed on this input: {type(exc).__name__}: "
                             f"{str(exc)[:300]}. The request was valid against the signature.", request_id=request_id)
            return
        self._send(200, content, headers={"X-Request-ID": request_id, "X-Model-Version": app.label})

    def log_message(self, format, *args):  # noqa: A002 (http.server's signature)
        if not self.server.quiet:
            sys.stderr.write(f"{self.address_string()} - [{self.log_date_time_string()}] {format % args}\n")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the listen backlog: bursts of new connections wait instead of being refused
    quiet = False
    app: App


def build_server(root: Path, *, host: str, port: int, max_rows: int, max_body_bytes: int, timeout: float,
                 check: bool = True, quiet: bool = False) -> Server:
    """Verify and load the model, then bind: once the port answers /ping, predictions are ready."""
    manifest = read_manifest(root)
    if check and manifest:
        verify(root, manifest)
    scorer = Scorer(root / "model", typical=manifest.get("typical"))
    app = App(scorer, manifest=manifest, max_rows=max_rows, max_body_bytes=max_body_bytes, timeout=timeout)
    handler = type("BoundHandler", (Handler,), {"app": app})
    server = Server((host, port), handler)
    server.quiet = quiet
    server.app = app
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve this package's model with MLflow's scoring protocol.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in a container)")
    parser.add_argument("--port", type=int, default=8080)
    limits = read_manifest(HERE).get("limits") or {}  # the deployment's own limits when it was exported
    parser.add_argument("--max-rows", type=int, default=limits.get("max_rows", DEFAULT_MAX_ROWS),
                        help="rows per request (413 above; default: the deployment's limit)")
    parser.add_argument("--max-body-bytes", type=int, default=limits.get("max_body_bytes", DEFAULT_MAX_BODY_BYTES),
                        help="request body size (413 above)")
    parser.add_argument("--timeout", type=float, default=limits.get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS),
                        help="seconds a prediction may take before it is cut off (504)")
    parser.add_argument("--skip-verify", action="store_true",
                        help="do not check the files against MANIFEST.json at start-up")
    parser.add_argument("--quiet", action="store_true", help="no access log")
    args = parser.parse_args(argv)
    for name in ("max_rows", "max_body_bytes", "timeout"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    started = time.perf_counter()
    try:
        server = build_server(HERE, host=args.host, port=args.port, max_rows=args.max_rows,
                              max_body_bytes=args.max_body_bytes, timeout=args.timeout, check=not args.skip_verify,
                              quiet=args.quiet)
    except ModelChanged as exc:
        logger.error("Refusing to start: %s", exc)
        return 2
    app = server.app
    logger.info("Serving %s on http://%s:%s (POST %s) — loaded in %.1f s", app.label, args.host, args.port,
                " or ".join(app.shown_paths), time.perf_counter() - started)

    def stop(signum, frame):  # as PID 1 in a container, SIGTERM is ignored unless handled
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
