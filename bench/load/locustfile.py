"""Locust users for the load test (bench/bench_load.py starts locust with this file; see docs/benchmarks.md, "Load").

Two kinds of user, in fixed numbers (LOAD_UI_USERS, LOAD_PREDICT_USERS):

- Browser: a person signed in with the password form who reads the portal, with 1-3 s of think time between
  requests (LOAD_UI_WAIT, "1,3"). Two of every three requests are pages (the Operations Center, models, a model
  card, datasets, approvals, the audit log, deployments), one is the REST API with the person's API token (list
  and detail endpoints), like a notebook or script next to the browser.
- Predictor: an application with a deployment key of its own that scores 1-25 rows (mostly one) of the
  benchmark model's data with 0.1-0.5 s between calls (LOAD_PREDICT_WAIT, "0.1,0.5").

Everything the users need (logins, keys, URLs, payload rows) is in the JSON file named by LOAD_PLAN, written by
the driver's setup. Every request is timed here, not with locust's own statistics (which round response times
into buckets): each one is kept with its group (login, ui, api, predict) and whether it failed, and written to
LOAD_RESULT when locust stops. The measured phase starts once every user has spawned and the browsers have signed
in, plus LOAD_SETTLE seconds (10) for the ramp's backlog (the ramp is kept apart in the result, not dropped), and
lasts LOAD_DURATION seconds.
"""

from __future__ import annotations

import json
import os
import random
import re
import time

import gevent
from locust import between, events, task
from locust.contrib.fasthttp import FastHttpUser

PLAN = json.loads(open(os.environ["LOAD_PLAN"]).read()) if os.environ.get("LOAD_PLAN") else {}  # noqa: SIM115
UI_USERS = int(os.environ.get("LOAD_UI_USERS", "50"))
PREDICT_USERS = int(os.environ.get("LOAD_PREDICT_USERS", "20"))
DURATION = float(os.environ.get("LOAD_DURATION", "300"))
UI_WAIT = tuple(float(x) for x in os.environ.get("LOAD_UI_WAIT", "1,3").split(","))
PREDICT_HOST = os.environ.get("LOAD_PREDICT_HOST", "").rstrip("/")
API_HOST = os.environ.get("LOAD_API_HOST", "").rstrip("/")
PREDICT_WAIT = tuple(float(x) for x in os.environ.get("LOAD_PREDICT_WAIT", "0.1,0.5").split(","))
# After the last user is ready, the ramp's backlog (sign-ins hash passwords: ~0.3 s of CPU each) drains first.
SETTLE = float(os.environ.get("LOAD_SETTLE", "10"))
# Seconds after the start when the measured phase begins even if not every user is ready (said so in the result).
READY_TIMEOUT = float(os.environ.get("LOAD_READY_TIMEOUT", "240"))
CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')

_samples: list[tuple[str, float, float, bool, int]] = []  # (name, sent at, ms, failed, status)
_errors: dict[str, int] = {}
_state = {"phase": "ramp", "ready": 0, "measure_start": None, "measure_end": None, "ready_timeout": False,
          "started": time.time()}


@events.request.add_listener
def _record(request_type, name, response_time, response_length, response=None, exception=None, **kwargs):
    status = getattr(response, "status_code", 0) or 0
    # Kept with the time it was sent: the driver counts a request in the phase in which it started.
    _samples.append((name, time.time() - response_time / 1000, float(response_time), exception is not None,
                     int(status)))
    if exception is not None and len(_errors) < 200:
        key = f"{name}: {str(exception)[:200]}"
        _errors[key] = _errors.get(key, 0) + 1


def _start_measuring(runner, timed_out: bool = False) -> None:
    if _state["phase"] != "ramp":
        return
    _state.update(phase="measure", measure_start=time.time(), ready_timeout=timed_out)

    def stop():
        _state.update(phase="after", measure_end=time.time())
        runner.quit()

    gevent.spawn_later(DURATION, stop)


def _user_ready(environment) -> None:
    _state["ready"] += 1
    if _state["ready"] == UI_USERS + PREDICT_USERS:
        gevent.spawn_later(SETTLE, _start_measuring, environment.runner)


@events.test_start.add_listener
def _on_test_start(environment, **kwargs):
    gevent.spawn_later(READY_TIMEOUT, _start_measuring, environment.runner, True)


@events.quitting.add_listener
def _write_result(environment, **kwargs):
    if _state["measure_end"] is None:
        _state["measure_end"] = time.time()
    path = os.environ.get("LOAD_RESULT")
    if not path:
        return
    with open(path, "w") as handle:
        json.dump({"state": _state, "errors": _errors,
                   "samples": [list(s) for s in _samples]}, handle)


class Browser(FastHttpUser):
    """A person in the browser (pages) with a script beside it (the API, with their token)."""

    fixed_count = UI_USERS
    wait_time = between(*UI_WAIT)

    def on_start(self) -> None:
        account = PLAN["browsers"][self._index() % len(PLAN["browsers"])]
        self.api_headers = {"Authorization": f"Token {account['token']}", "Accept": "application/json"}
        page = self.client.get("/accounts/login/", name="login: form")
        match = CSRF.search(page.text or "")
        with self.client.post("/accounts/login/", name="login: sign in", allow_redirects=False, catch_response=True,
                              data={"username": account["username"], "password": PLAN["password"],
                                    "csrfmiddlewaretoken": match.group(1) if match else ""},
                              headers={"Referer": f"{self.host}/accounts/login/"}) as response:
            if response.status_code != 302:
                response.failure(f"sign-in answered {response.status_code}, not a redirect")
        _user_ready(self.environment)

    def _index(self) -> int:
        Browser._count = getattr(Browser, "_count", -1) + 1
        return Browser._count

    def _page(self, url: str, name: str) -> None:
        # No redirects: a page that sends the user back to the sign-in form is an error, not a fast 200.
        with self.client.get(url, name=f"ui: {name}", allow_redirects=False, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}")

    def _api(self, url: str, name: str) -> None:
        # The API gunicorn when the driver starts one (the proxy's /api/ route), like the prediction clients.
        with self.client.get(f"{API_HOST}{url}", name=f"api: {name}", headers=self.api_headers, allow_redirects=False,
                             catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {(response.text or '')[:200]}")

    @task(6)
    def ui_page(self) -> None:
        name, url = random.choice(PLAN["ui"])
        self._page(url, name)

    @task(3)
    def api_call(self) -> None:
        name, url = random.choice(PLAN["api"])
        self._api(url, name)


class Predictor(FastHttpUser):
    """A client application scoring rows with a deployment key of its own."""

    fixed_count = PREDICT_USERS
    wait_time = between(*PREDICT_WAIT)

    def on_start(self) -> None:
        Predictor._count = getattr(Predictor, "_count", -1) + 1
        key = PLAN["predict_keys"][Predictor._count % len(PLAN["predict_keys"])]
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        # The serving-only gunicorn when the driver starts one (the reverse proxy's invocations route in
        # production); an absolute URL, since locust's --host is every user's base.
        self.url = f"{PREDICT_HOST}/api/v1/deployments/{PLAN['predict_slug']}/invocations"
        _user_ready(self.environment)

    @task
    def predict(self) -> None:
        rows = random.choice(PLAN["predict_sizes"])
        data = random.sample(PLAN["predict_rows"], rows)
        body = json.dumps({"dataframe_split": {"columns": PLAN["predict_columns"], "data": data}})
        with self.client.post(self.url, name="predict: invocations", data=body, headers=self.headers,
                              catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {(response.text or '')[:200]}")
                return
            try:
                predictions = json.loads(response.text)["predictions"]
            except (ValueError, KeyError, TypeError):
                response.failure("no predictions in the answer")
                return
            if len(predictions) != rows:
                response.failure(f"{len(predictions)} predictions for {rows} rows")
