"""The invocations hot path: token → permission → parse → signature check → cached predictor → answer → log.

Everything a request needs is kept in this process and looked up again only every PORTAL_SERVING_CACHE_SECONDS:
the caller behind a token (and their roles), and the deployment's routing (champion, challenger, limits). A
change made through this process (a rollout, a revoked token) is seen at once; one made elsewhere within
that many seconds. When the routing changes, the new versions load in a background thread while requests go
on being answered by the old ones; the swap is one assignment. Predictions run in a small thread pool so a
model that hangs is cut off (504) without taking the worker with it (all but a forest's walk of a few rows, which
is our own bounded code).
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field

from django.conf import settings

from apps.deployments import predlog, protocol

logger = logging.getLogger(__name__)

_TOKEN = re.compile(r"^\s*(?:Token|Bearer)\s+(\S+)\s*$", re.IGNORECASE)


def _ttl() -> float:
    return float(settings.PORTAL_SERVING_CACHE_SECONDS)


# --- Callers -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    user: object
    label: str  # "username" or "username (token name)", as the prediction log shows it
    rate_key: str
    token_project_id: int | None = None
    token_deployment_id: int | None = None

    def may_call(self, route: Route) -> bool:
        return self.may_reach(route.project, route.deployment_id)

    def may_reach(self, project, deployment_id: int) -> bool:
        from apps.accounts.permissions import Action, can

        if self.token_project_id is not None and self.token_project_id != project.pk:
            return False
        if self.token_deployment_id is not None and self.token_deployment_id != deployment_id:
            return False
        return can(self.user, Action.PREDICT, project)


class AuthFailed(Exception):
    pass


_callers: dict[str, tuple[float, Caller | str]] = {}
_callers_lock = threading.Lock()


def caller_for_key(key: str) -> Caller:
    """The caller behind a project API token (pt_…) or a deployment token (pd_…); AuthFailed says why not."""
    from apps.accounts.models import hash_token_key

    digest = hash_token_key(key)
    now = time.monotonic()
    cached = _callers.get(digest)
    if cached is None or now - cached[0] > _ttl():
        cached = (now, _look_up(digest))
        with _callers_lock:
            if len(_callers) > 10_000:
                _callers.clear()
            _callers[digest] = cached
    if isinstance(cached[1], str):
        raise AuthFailed(cached[1])
    return cached[1]


def _look_up(digest: str) -> Caller | str:
    from apps.accounts.models import ApiToken
    from apps.deployments.models import DeploymentToken

    token = ApiToken.objects.select_related("user").filter(key_hash=digest).first()
    if token is not None:
        if token.status != "active":
            return f"This token is {token.status}. Create a new one."
        if not token.user.is_active:
            return "This user account is deactivated."
        token.mark_used()  # looked up once per cache period, so "last used" is as precise as that
        return Caller(user=token.user, label=f"{token.user.username} ({token.name})", rate_key=f"t{token.pk}",
                      token_project_id=token.project_id)
    token = DeploymentToken.objects.select_related("created_by").filter(key_hash=digest).first()
    if token is not None:
        if token.status != "active":
            return f"This deployment token is {token.status}. Create a new one."
        if not token.created_by.is_active:
            return "The account that created this token is deactivated."
        return Caller(user=token.created_by, label=f"{token.created_by.username} ({token.name})",
                      rate_key=f"d{token.pk}", token_deployment_id=token.deployment_id)
    return "Invalid token."


def forget_callers() -> None:
    """Tokens, memberships or users changed in this process: look every caller up again."""
    with _callers_lock:
        _callers.clear()


def authenticate(request) -> Caller:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if header:
        match = _TOKEN.match(header)
        if not match:
            raise AuthFailed("Send the key as “Authorization: Token <key>”.")
        return caller_for_key(match.group(1))
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        raise AuthFailed("Authentication credentials were not provided: send “Authorization: Token <key>”.")
    from django.middleware.csrf import CsrfViewMiddleware

    # A browser session may call the endpoint (the page's "Try it"); like any form, only with its CSRF token.
    refusal = CsrfViewMiddleware(lambda r: None).process_view(request, None, (), {})
    if refusal is not None:
        raise AuthFailed("CSRF check failed: a browser session must send the X-CSRFToken header.")
    return Caller(user=user, label=user.username, rate_key=f"u{user.pk}")


# --- Models as served ----------------------------------------------------------------------------------------


class ServingModel:
    """A version ready to predict on a checked DataFrame, by the shortest path its flavour allows
    (predictors.choose: scikit-learn directly, forests through their verified fast path, ONNX on the matrix)."""

    def __init__(self, version, pyfunc):
        from apps.deployments import predictors
        from apps.registry.evidence.predictor import input_columns, reference_values

        self.version_id = version.pk
        self.label = f"{version.model.slug} v{version.number}"
        self.inputs = input_columns(version)
        self.schema = protocol.Schema(self.inputs)
        self.pyfunc = pyfunc
        typical = reference_values(version) if self.schema.numeric else None
        self._predict, self.path = predictors.choose(pyfunc, self.schema, typical, label=self.label)
        self.inline_rows = predictors.inline_rows(self._predict)

    def predict(self, frame):
        return self._predict(frame)


def load_serving_model(version) -> ServingModel:
    from apps.registry.evidence import load_predictor

    return ServingModel(version, load_predictor(version))


# --- Routing ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    deployment_id: int
    slug: str
    project: object
    generation: int
    active: bool
    champion: ServingModel
    challenger: ServingModel | None
    mode: str
    share: int
    max_rows: int
    rate_limit: int
    fallback_id: int | None = None
    refusal: str = ""  # why an active deployment answers 503 (its champion can no longer serve)


@dataclass
class _RouteState:
    current: Route | None = None
    checked_at: float = 0.0
    loading: int | None = None  # the generation a background thread is loading
    lock: threading.Lock = field(default_factory=threading.Lock)


_routes: dict[str, _RouteState] = {}
_routes_lock = threading.Lock()
_models: dict[int, ServingModel] = {}  # by version id: what this process has loaded for serving
_models_lock = threading.Lock()


def _model(version) -> ServingModel:
    model = _models.get(version.pk)
    if model is None:
        model = load_serving_model(version)
        with _models_lock:
            _models[version.pk] = model
    return model


def _fetch(slug: str):
    from apps.deployments.models import Deployment

    # Everything loading a model reads comes with the row (the training profile gives the typical values), so
    # the background loader never queries: it may run before the change that started it is visible to it.
    related = [f"{role}__{part}" for role in ("champion", "challenger", "fallback")
               for part in ("model", "training_dataset")]
    return Deployment.objects.select_related("project", *related).filter(slug=slug).first()


def _build(row) -> Route:
    return Route(
        deployment_id=row.pk, slug=row.slug, project=row.project, generation=row.generation,
        active=row.status == row.Status.ACTIVE, champion=_model(row.champion),
        challenger=_model(row.challenger) if row.challenger_id else None, mode=row.challenger_mode,
        share=row.challenger_share, max_rows=row.effective_max_rows, rate_limit=row.effective_rate_limit,
        fallback_id=row.fallback_id, refusal=_champion_refusal(row))


def _champion_refusal(row) -> str:
    version = row.champion
    if version.is_servable:
        return ""
    return (f"{version.model.name} v{version.number} is {version.get_status_display().lower()} and can no longer "
            "serve: roll back, or deploy another version.")


def _release_unused_models() -> None:
    """Forget models no deployment in this process needs any more (old champions two rollouts back), so a
    long-lived worker does not keep every version it ever served in memory."""
    needed = set()
    for state in list(_routes.values()):
        route = state.current
        if route is not None:
            needed.update(v for v in (route.champion.version_id, route.challenger and route.challenger.version_id,
                                      route.fallback_id) if v)
        if state.loading is not None:
            return  # a load in progress may be about to use a model not referenced yet
    with _models_lock:
        for version_id in [v for v in _models if v not in needed]:
            del _models[version_id]


def _ready(row) -> bool:
    return row.champion_id in _models and (row.challenger_id is None or row.challenger_id in _models)


def _load_in_background(state: _RouteState, row) -> None:
    def work():
        from django.db import close_old_connections

        try:
            route = _build(row)
            with state.lock:
                if _replaces(route, state.current):
                    state.current = route  # the swap: requests from now on see the new versions
            if row.fallback_id:
                _model(row.fallback)  # warm, so a rollback swaps at once too
        except Exception:
            logger.exception("could not load the new routing of deployment %s", row.slug)
        finally:
            with state.lock:
                state.loading = None
            _release_unused_models()
            close_old_connections()

    threading.Thread(target=work, name=f"load-{row.slug}", daemon=True).start()


def route_for(slug: str, caller: Caller | None = None) -> Route | None:
    """The deployment's routing as this process serves it (None: no such deployment, or `caller` may not call it:
    checked before any model is loaded, so nobody outside the project can make this process load one)."""
    state = _routes.get(slug)
    now = time.monotonic()
    if state is not None and state.current is not None and now - state.checked_at < _ttl():
        return state.current
    if state is None:
        with _routes_lock:
            state = _routes.setdefault(slug, _RouteState())
    row = _fetch(slug)
    if row is None:
        with _routes_lock:
            _routes.pop(slug, None)
        return None
    if caller is not None and not caller.may_reach(row.project, row.pk):
        return None
    with state.lock:
        state.checked_at = now
        current = state.current
        if current is not None and current.generation >= row.generation and \
                bool(current.refusal) == bool(_champion_refusal(row)):
            return current
        if current is not None and not _ready(row):
            if state.loading != row.generation:
                state.loading = row.generation
                _load_in_background(state, row)
            return current  # the old versions keep answering until the new ones are loaded
    route = _build(row)  # first request in this process, or the versions are already loaded: swap now
    with state.lock:
        if _replaces(route, state.current):
            state.current = route
        return state.current


def _replaces(route: Route, current: Route | None) -> bool:
    """A later generation, or the same one whose champion stopped (or started again) being servable."""
    if current is None or route.generation > current.generation:
        return True
    return route.generation == current.generation and route.refusal != current.refusal


def forget_route(slug: str) -> None:
    """The deployment changed in this process: look at it again on the next request."""
    state = _routes.get(slug)
    if state is not None:
        state.checked_at = 0.0


def forget_all() -> None:
    """For tests: drop every cached caller, route and model."""
    forget_callers()
    with _routes_lock:
        _routes.clear()
    with _models_lock:
        _models.clear()


def resolve_artifact(version) -> None:
    """At deploy time: find where the version's files are, so no serving process needs a registry lookup."""
    from apps.registry import mlflow_store

    if version.mlflow_model_uri:
        mlflow_store.artifact_location(version.mlflow_model_uri, version.artifact_sha256)


def warm(slug: str) -> None:
    """Load a deployment's models now (after a deploy, so the first call is not the one that waits)."""
    route_for(slug)


# --- The deploy-time smoke check --------------------------------------------------------------------------------


def runs_own_code(flavors: dict) -> bool:
    """Whether predicting with this MLflow model runs Python that came with it (a python_function model's own code,
    a trusted pickle) rather than a library reading data (skops, ONNX, XGBoost, LightGBM)."""
    pyfunc = flavors.get("python_function") or {}
    loader = pyfunc.get("loader_module")
    if loader == "mlflow.pyfunc.model":
        return True
    return loader == "mlflow.sklearn" and (flavors.get("sklearn") or {}).get("serialization_format") != "skops"


_ZERO = {"long": 0, "integer": 0, "double": 0.0, "float": 0.0, "boolean": False}


_SMOKE_STARTUP_SECONDS = 120


def _line_within(stream, seconds: float) -> str:
    """The next line `stream` gives within `seconds` ("" if none: it closed or stayed silent)."""
    import select

    ready, _, _ = select.select([stream], [], [], seconds)
    return stream.readline().decode("utf-8", "replace").strip() if ready else ""


def smoke_refusal(version) -> str:
    """Why `version` may not start serving ("" if it may): a model that runs its own code must load and answer one
    typical row in a child process (apps/deployments/smoke.py) within PORTAL_DEPLOY_CHECK_SECONDS (default 60)
    and PORTAL_DEPLOY_CHECK_MEMORY_MB (default 4096) more memory. A hang or an explosion is found there, not in
    a web worker, and whatever serves now keeps serving."""
    import contextlib
    import json
    import os
    import signal
    import subprocess
    import sys
    import tempfile
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    from mlflow.models import Model

    from apps.registry import mlflow_store
    from apps.registry.evidence.predictor import input_columns, reference_values

    if not settings.PORTAL_DEPLOY_CHECK or not version.mlflow_model_uri:
        return ""
    try:
        location = mlflow_store.artifact_location(version.mlflow_model_uri, version.artifact_sha256)
        # Model.load takes a local directory, or a remote URI of the MLmodel file itself.
        local = location.startswith("file://") or "://" not in location
        flavors = Model.load(url2pathname(urlparse(location).path) if local else f"{location}/MLmodel").flavors
    except Exception as exc:  # an unreadable artifact is reported by serving when it loads it, as before
        logger.warning("smoke check: cannot read the MLmodel of %s (%s)", version, exc)
        return ""
    if not runs_own_code(flavors):
        return ""
    inputs = input_columns(version)
    typical = reference_values(version)
    row = [typical.get(c["name"], _ZERO.get(c.get("type"), "")) for c in inputs]
    seconds = float(settings.PORTAL_DEPLOY_CHECK_SECONDS)
    request = json.dumps({"location": location, "inputs": inputs, "row": row,
                          "memory_mb": settings.PORTAL_DEPLOY_CHECK_MEMORY_MB}, default=str)
    label = f"{version.model.name} v{version.number}"
    kept = "so it was not deployed and the current version keeps serving"
    with tempfile.TemporaryFile() as errors:
        child = subprocess.Popen([sys.executable, "-m", "apps.deployments.smoke"], cwd=str(settings.BASE_DIR),
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, start_new_session=True,
                                 env={"DJANGO_SETTINGS_MODULE": "portal.settings", **os.environ})
        stopped = ""
        try:
            child.stdin.write(request.encode())
            child.stdin.close()
            # Starting Python and importing MLflow takes seconds on a busy machine: that is not the model's time.
            if _line_within(child.stdout, _SMOKE_STARTUP_SECONDS) != "ready":
                stopped = "startup"
            else:
                child.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            stopped = "timeout"
        finally:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)  # its whole group: a model may have started processes of its own
            out = child.stdout.read()
            child.stdout.close()
            child.wait()
        errors.seek(0)
        tail = errors.read()[-2000:].decode("utf-8", "replace")
    if stopped == "timeout":
        return (f"{label} did not answer a test prediction of one typical row within {seconds:g} s, {kept}. Fix the "
                "model (does it wait on something?) and import it again.")
    lines = out.decode("utf-8", "replace").split()
    outcome = ""
    with contextlib.suppress(ValueError, IndexError, KeyError, TypeError):
        outcome = json.loads(out.decode().strip().splitlines()[-1])["outcome"]
    if child.returncode in (0, 4) and not stopped:  # 4: it did not even load; serving says so per request
        logger.log(logging.INFO if child.returncode == 0 else logging.WARNING, "smoke check of %s: %s", label, outcome)
        return ""
    logger.warning("smoke check of %s failed (%s, exit %s): %s %s", label, stopped or "ran", child.returncode,
                   outcome, tail)
    if stopped == "startup" and "ready" not in lines:
        return (f"The test prediction of {label} could not start ({tail.strip().splitlines()[-1:] or 'no output'}), "
                f"{kept}. Tell your Portal operators.")
    if child.returncode == 3 or child.returncode == -signal.SIGKILL:  # our limit, or the kernel's OOM killer
        limit = settings.PORTAL_DEPLOY_CHECK_MEMORY_MB
        return (f"{label} ran out of memory on a test prediction of one typical row (limit {limit:,} MB more), "
                f"{kept}.")
    return f"{label} failed its test prediction ({outcome or f'exit code {child.returncode}'}), {kept}."


# --- Rate limits -----------------------------------------------------------------------------------------------

_local_counts: dict[tuple[str, int], int] = {}
_local_lock = threading.Lock()


def rate_limited(caller: Caller, route: Route) -> int:
    """Seconds to wait if the caller used up this minute's requests on this deployment, else 0.

    Counted in Redis (shared by every process) when REDIS_URL is set; on the embedded defaults, or if Redis does
    not answer, per process."""
    limit = route.rate_limit
    if limit <= 0:
        return 0
    now = time.time()
    window = int(now // 60)
    key = f"{caller.rate_key}:{route.deployment_id}"
    count = None
    client = predlog.hot_redis()
    if client is not None:
        try:
            pipe = client.pipeline(transaction=False)
            pipe.incr(f"portal:rate:{key}:{window}")
            pipe.expire(f"portal:rate:{key}:{window}", 120)
            count = pipe.execute()[0]
        except Exception as exc:  # Redis down: count in this process rather than refuse or fail the request
            predlog.redis_failed(exc)
            count = None
    if count is None:
        with _local_lock:
            if len(_local_counts) > 100_000:
                _local_counts.clear()
            count = _local_counts[(key, window)] = _local_counts.get((key, window), 0) + 1
    if count > limit:
        return max(1, int(60 - now % 60) + 1)
    return 0


# --- Predicting ------------------------------------------------------------------------------------------------

_POOL_SIZE = 8
_pool = ThreadPoolExecutor(max_workers=_POOL_SIZE, thread_name_prefix="predict")
_shadow_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="shadow")
_hung = 0
_pool_lock = threading.Lock()


class PredictTimeout(Exception):
    pass


def run_model(model: ServingModel, frame, timeout: float | None = None):
    """The model's output, cut off after `timeout` seconds (its thread is abandoned, the process goes on).

    If hung predictions fill most of the pool, a fresh pool takes over so later requests are not stuck behind them.
    """
    global _pool, _hung
    if len(frame) <= model.inline_rows:
        # A bounded walk (predictors.inline_rows) cannot hang, and the pool's two thread hand-offs cost it ~10 %
        # (bench_serving: 1.59 → 1.46 ms a row, 532 → 601 req/s at c=8); under load each one also waits for the
        # GIL whenever another request of this process is running.
        return model.predict(frame)
    timeout = settings.PORTAL_SERVING_TIMEOUT_SECONDS if timeout is None else timeout
    future = _pool.submit(model.predict, frame)
    try:
        return future.result(timeout=timeout)
    except FutureTimeout:
        with _pool_lock:
            _hung += 1
            if _hung >= _POOL_SIZE // 2:
                logger.error("%s predictions hung; starting a fresh prediction pool", _hung)
                _pool, _hung = ThreadPoolExecutor(max_workers=_POOL_SIZE, thread_name_prefix="predict"), 0
        raise PredictTimeout from None


@dataclass
class Answer:
    status: int
    body: dict | None = None  # error bodies; successful answers carry `content` instead
    content: bytes = b""
    request_id: str = ""
    headers: dict = field(default_factory=dict)


def _error(status: int, detail: str, *, request_id: str = "", field_name: str | None = None, **headers) -> Answer:
    body = {"detail": detail}
    if field_name:
        body["errors"] = {field_name: [detail]}
    if request_id:
        body["request_id"] = request_id
    return Answer(status=status, body=body, request_id=request_id, headers=headers)


def _read_body(request, limit: int) -> bytes:
    length = request.META.get("CONTENT_LENGTH") or ""
    if length.isdigit() and int(length) > limit:
        raise protocol.PayloadError(f"The body is {int(length):,} bytes; the limit is {limit:,}. Split the request "
                                    "or use batch scoring.", field="body", status=413)
    body = request.read(limit + 1)
    if len(body) > limit:
        raise protocol.PayloadError(f"The body is over the limit of {limit:,} bytes. Split the request or use batch "
                                    "scoring.", field="body", status=413)
    return body


def invoke(request, slug: str) -> Answer:
    """Answer one invocations request (the view only turns the Answer into an HttpResponse)."""
    started = time.perf_counter()
    try:
        caller = authenticate(request)
    except AuthFailed as exc:
        return _error(401, str(exc), WWW_Authenticate="Token")
    try:
        route = route_for(slug, caller)
    except Exception:  # e.g. the champion's artifact is missing from the store: the process stays up
        logger.exception("deployment %s could not load its model", slug)
        return _error(503, "The deployment's model could not be loaded. The operators have been told in the logs; "
                           "try again later.", Retry_After="30")
    if route is None or not caller.may_call(route):
        return _error(404, "No such deployment, or this token may not call it.")
    if not route.active:
        return _error(503, "This deployment is stopped: a project member can resume it on its page.")
    if route.refusal:  # e.g. its champion was archived after it was deployed
        return _error(503, route.refusal)
    wait = rate_limited(caller, route)
    if wait:
        return _error(429, f"Too many requests: this deployment allows {route.rate_limit:,} per minute per token. "
                           f"Retry in {wait} s.", Retry_After=str(wait))
    request_id = uuid.uuid4().hex
    model = route.champion
    role = "champion"
    if route.challenger is not None and route.mode == "canary" and random.random() * 100 < route.share:
        model, role = route.challenger, "canary"
    table = None
    body = b""
    content_type = request.META.get("CONTENT_TYPE", "")
    try:
        body = _read_body(request, settings.PORTAL_SERVING_MAX_BODY_BYTES)
        table = protocol.parse(body, content_type)
        frame = model.schema.frame(table, max_rows=route.max_rows)
    except protocol.PayloadError as exc:
        answer = Answer(status=exc.status, body={**exc.as_json(), "request_id": request_id}, request_id=request_id)
        kept = body[:REFUSED_BODY_KEPT] if exc.status != 413 else b""  # what was sent, for whoever debugs it
        _log(route, model, role, request_id, started, caller, answer.status, sent=(kept, content_type), table=table,
             error=exc.message)
        return answer
    sent = (body, content_type)
    try:
        output = run_model(model, frame)
        predictions = protocol.predictions_list(output)
        content = protocol.dumps({"predictions": predictions})
    except PredictTimeout:
        detail = (f"The model did not answer within {settings.PORTAL_SERVING_TIMEOUT_SECONDS} s and was cut off. "
                  "Try fewer rows; if it keeps happening, roll back.")
        _log(route, model, role, request_id, started, caller, 504, sent=sent, table=table, error=detail)
        return _error(504, detail, request_id=request_id)
    except Exception as exc:  # the model itself failed on checked input: its fault, not the caller's
        logger.info("deployment %s: %s failed: %s", slug, model.label, exc)
        detail = (f"The model ({model.label}) failed on this input: {type(exc).__name__}: {str(exc)[:300]}. "
                  "The request was valid against the signature; the deployment's owners can see it in the log.")
        _log(route, model, role, request_id, started, caller, 502, sent=sent, table=table, error=detail)
        return _error(502, detail, request_id=request_id)
    _log(route, model, role, request_id, started, caller, 200, sent=sent, table=table, answer=content)
    if route.challenger is not None and route.mode == "shadow":
        _shadow_pool.submit(_shadow, route, caller, request_id, sent, table, frame)
    return Answer(status=200, content=content, request_id=request_id, headers={"X_Model_Version": model.label})


REFUSED_BODY_KEPT = 10_000  # bytes of a refused request's body kept in the log


def _log(route: Route, model: ServingModel, role: str, request_id: str, started: float, caller: Caller, status: int,
         *, sent: tuple[bytes, str] | None = None, table=None, answer: bytes | None = None, outputs=None,
         error: str = "") -> None:
    """Buffer the request's record. The body and the answer go in as the bytes that were sent: turning them into
    {"columns", "data"} and a list is the drain's work, off the response's path (a 1,000-row request would
    otherwise spend milliseconds serialising its own inputs again)."""
    record = predlog.new_record(
        request_id=request_id, deployment_id=route.deployment_id, version_id=model.version_id, role=role,
        latency_ms=round((time.perf_counter() - started) * 1000, 3), status=status, caller=caller.label,
        caller_id=getattr(caller.user, "pk", None), row_count=len(table.rows) if table is not None else 0,
        outputs=outputs, error=error)
    if sent is not None and sent[0]:
        record["b"], record["ct"] = sent[0].decode("utf-8", "replace"), sent[1]
    if answer is not None:
        record["oc"] = answer.decode()
    try:
        predlog.push(record)
    except Exception:  # the answer is already computed; losing it now would lose the prediction too
        logger.exception("prediction log: could not buffer record %s", record["r"])
        predlog.insert([record])


def _shadow(route: Route, caller: Caller, request_id: str, sent, table, frame) -> None:
    started = time.perf_counter()
    model = route.challenger
    try:
        outputs = protocol.predictions_list(run_model(model, frame))
        _log(route, model, "shadow", request_id, started, caller, 200, sent=sent, table=table, outputs=outputs)
    except PredictTimeout:
        _log(route, model, "shadow", request_id, started, caller, 504, sent=sent, table=table, error="timed out")
    except Exception as exc:
        _log(route, model, "shadow", request_id, started, caller, 502, sent=sent, table=table,
             error=f"{type(exc).__name__}: {str(exc)[:300]}")
    finally:
        from django.db import close_old_connections

        close_old_connections()
