"""Packaging: a deployment exported as a container build context whose server answers like the portal."""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import socket
import subprocess
import sys
import tarfile
import time
from importlib import metadata
from pathlib import Path

import pytest
from django.template.loader import render_to_string
from django.test import RequestFactory

from apps.audit.models import AuditEvent
from apps.deployments import packaging, services
from apps.registry.models import ModelVersion
from tests.deployments.conftest import FEATURES, training_frame

pytestmark = pytest.mark.django_db


@pytest.fixture
def deployment(people, project, sandbox, version):
    return services.deploy(project, actor=people["scientist"], name="Churn scoring", environment=sandbox,
                           version=version)


def _url(deployment) -> str:
    return f"/api/v1/deployments/{deployment.slug}/package/"


def _download(api, deployment, tmp_path: Path) -> tuple[Path, object]:
    response = api.get(_url(deployment), HTTP_ACCEPT="application/gzip")
    assert response.status_code == 200, getattr(response, "data", response)
    content = b"".join(response.streaming_content)
    assert response["Content-Type"] == "application/gzip"
    assert response["X-Package-SHA256"] == hashlib.sha256(content).hexdigest()
    target = tmp_path / "package"
    target.mkdir()
    with tarfile.open(fileobj=io.BytesIO(content), mode="r:gz") as tar:
        tar.extractall(target, filter="data")
    return target, response


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """serve.py in a subprocess of this interpreter, cwd = the unpacked archive."""

    def __init__(self, root: Path, *args: str):
        self.port = _free_port()
        self.process = subprocess.Popen([sys.executable, "serve.py", "--port", str(self.port), "--quiet", *args],
                                        cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.connection = None

    def wait(self, seconds: float = 60) -> Server:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"serve.py exited: {self.process.stdout.read().decode()}")
            try:
                status, _, _ = self.request("GET", "/ping")
                if status == 200:
                    return self
            except OSError:
                self.connection = None
                time.sleep(0.2)
        raise AssertionError("serve.py did not answer /ping in time")

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str = "application/json"):
        # One connection for every request: the server keeps it alive (HTTP/1.1).
        if self.connection is None:
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"Content-Type": content_type} if body is not None else {}
        self.connection.request(method, path, body=body, headers=headers)
        response = self.connection.getresponse()
        content = response.read()
        if response.getheader("Connection", "").lower() == "close":
            self.connection.close()
            self.connection = None
        return response.status, dict(response.getheaders()), content

    def stop(self) -> None:
        if self.connection is not None:
            self.connection.close()
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _payloads() -> list[tuple[str, bytes, str]]:
    frame = training_frame(rows=25, seed=11)[FEATURES]
    return [
        ("dataframe_split", json.dumps({"dataframe_split": frame.to_dict(orient="split", index=False)}).encode(),
         "application/json"),
        ("dataframe_records", json.dumps({"dataframe_records": frame.to_dict(orient="records")}).encode(),
         "application/json"),
        ("instances", json.dumps({"instances": frame.values.tolist()}).encode(), "application/json"),
        ("csv", frame.to_csv(index=False).encode(), "text/csv"),
    ]


_BAD = [
    ("missing column", {"dataframe_records": [{"age": 30, "income": 1.5}]}),
    ("unknown column", {"dataframe_records": [{"age": 30, "income": 1.5, "tenure": 2, "zip": "x"}]}),
    ("wrong type", {"dataframe_split": {"columns": FEATURES, "data": [["thirty", 1.5, 2]]}}),
    ("unknown key", {"rows": []}),
]


def _without_request_id(body: dict) -> dict:
    return {k: v for k, v in body.items() if k != "request_id"}


def test_archive_server_answers_like_the_portal(people, deployment, api_as, tmp_path):
    api = api_as(people["scientist"])
    root, _ = _download(api, deployment, tmp_path)
    assert {p.name for p in root.iterdir()} == {"model", "serve.py", "protocol.py", "predictors.py", "requirements.txt",
                                                "Dockerfile", "README.md", "MANIFEST.json"}
    server = Server(root).wait()
    try:
        invocations = f"/api/v1/deployments/{deployment.slug}/invocations"
        for name, body, content_type in _payloads():
            portal = api.generic("POST", invocations, body, content_type=content_type)
            assert portal.status_code == 200, (name, portal.content)
            for path in ("/invocations", invocations):
                status, headers, content = server.request("POST", path, body, content_type)
                assert status == 200, (name, content)
                assert json.loads(content) == json.loads(portal.content), name
                assert len(headers["X-Request-ID"]) == 32
        for name, payload in _BAD:
            body = json.dumps(payload).encode()
            portal = api.post(invocations, body, content_type="application/json")
            status, headers, content = server.request("POST", "/invocations", body)
            assert status == portal.status_code == 400, name
            answer = json.loads(content)
            assert set(answer) == {"detail", "errors", "request_id"}
            assert answer["request_id"] == headers["X-Request-ID"]
            assert _without_request_id(answer) == _without_request_id(portal.json()), name
        status, _, content = server.request("POST", "/invocations", b"{not json")
        assert status == 400 and "not valid JSON" in json.loads(content)["detail"]
        status, _, content = server.request("POST", "/invocations", b"a,b", content_type="text/plain")
        assert status == 415 and json.loads(content)["errors"]["content_type"]
        status, _, content = server.request("GET", "/health")
        health = json.loads(content)
        assert status == 200 and health["deployment"] == deployment.slug
        assert [c["name"] for c in health["inputs"]] == FEATURES
        status, headers, _ = server.request("GET", "/invocations")
        assert status == 405 and headers["Allow"] == "POST"
        status, _, content = server.request("POST", "/api/v1/deployments/another/invocations", b"{}")
        assert status == 404 and "/invocations" in json.loads(content)["detail"]
        status, _, _ = server.request("GET", "/ping")  # the connection survived every answer above
        assert status == 200
    finally:
        server.stop()


def test_archive_server_limits(people, deployment, api_as, tmp_path):
    root, _ = _download(api_as(people["scientist"]), deployment, tmp_path)
    server = Server(root, "--max-rows", "3", "--max-body-bytes", "2000").wait()
    try:
        rows = {"dataframe_split": {"columns": FEATURES, "data": [[30, 1.5, 2]] * 4}}
        status, _, content = server.request("POST", "/invocations", json.dumps(rows).encode())
        assert status == 413 and "limit of 3" in json.loads(content)["detail"]
        big = {"dataframe_split": {"columns": FEATURES, "data": [[30, 1.5, 2]] * 200}}
        status, headers, content = server.request("POST", "/invocations", json.dumps(big).encode())
        assert status == 413 and json.loads(content)["errors"]["body"]
        status, _, content = server.request("POST", "/invocations", json.dumps({"instances": [[30, 1.5, 2]]}).encode())
        assert status == 200 and len(json.loads(content)["predictions"]) == 1
    finally:
        server.stop()


def test_manifest_lists_every_file_with_its_digest(people, deployment, version, api_as, tmp_path):
    root, _ = _download(api_as(people["scientist"]), deployment, tmp_path)
    manifest = json.loads((root / "MANIFEST.json").read_text())
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} - {"MANIFEST.json"}
    assert set(manifest["files"]) == on_disk
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((root / name).read_bytes()).hexdigest() == digest, name
    assert manifest["deployment"]["slug"] == deployment.slug
    assert manifest["model"]["version"] == version.number
    assert manifest["model"]["artifact_sha256"] == version.artifact_sha256
    assert manifest["model"]["contains_pickle"] is False
    assert (root / "protocol.py").read_bytes() == Path(packaging.PROTOCOL_SOURCE).read_bytes()
    requirements = (root / "requirements.txt").read_text().splitlines()
    for name in ("mlflow", "pandas", "numpy"):
        assert f"{name}=={metadata.version(name)}" in requirements
        assert sum(1 for line in requirements if line.split("=")[0].split("<")[0].split(">")[0] == name) == 1
    assert any(line.startswith("scikit-learn") for line in requirements)
    dockerfile = (root / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in dockerfile and "USER model" in dockerfile and "EXPOSE 8080" in dockerfile
    assert 'CMD ["python", "serve.py", "--host", "0.0.0.0", "--port", "8080"]' in dockerfile
    readme = (root / "README.md").read_text()
    assert version.artifact_sha256 in readme and deployment.slug in readme and "no authentication" in readme


def test_server_refuses_to_start_when_a_file_was_changed(people, deployment, api_as, tmp_path):
    root, _ = _download(api_as(people["scientist"]), deployment, tmp_path)
    (root / "model" / "MLmodel").write_text((root / "model" / "MLmodel").read_text() + "\n# changed\n")
    result = subprocess.run([sys.executable, "serve.py", "--port", str(_free_port())], cwd=root,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "model/MLmodel does not match" in result.stderr


def test_download_name_and_audit_event(people, deployment, version, api_as, tmp_path):
    _, response = _download(api_as(people["admin"]), deployment, tmp_path)
    assert f'filename="{deployment.slug}-{version.model.slug}-v{version.number}.tar.gz"' in \
        response["Content-Disposition"]
    event = AuditEvent.objects.get(action="deployment.package_export")
    assert event.actor == people["admin"]
    assert event.details["archive_sha256"] == response["X-Package-SHA256"]
    assert event.details["contains_pickle"] is False


def test_viewer_gets_403_and_outsider_404(people, deployment, api_as, client_as):
    assert api_as(people["viewer"]).get(_url(deployment)).status_code == 403
    assert api_as(people["approver"]).get(_url(deployment)).status_code == 403
    assert api_as(people["outsider"]).get(_url(deployment)).status_code == 404
    assert client_as(people["outsider"]).get(_url(deployment)).status_code == 404
    assert api_as(people["scientist"]).get("/api/v1/deployments/no-such/package/").status_code == 404
    assert not AuditEvent.objects.filter(action="deployment.package_export").exists()


def test_refuses_a_champion_that_can_no_longer_serve(people, deployment, version, api_as):
    ModelVersion.objects.filter(pk=version.pk).update(status=ModelVersion.Status.QUARANTINED, trusted_sha256="")
    response = api_as(people["scientist"]).get(_url(deployment))
    assert response.status_code == 409
    assert "cannot be exported" in response.json()["detail"] and response.json()["errors"]["champion"]


def test_trusted_pickle_only_exported_by_an_admin_with_a_warning(people, deployment, version, api_as, tmp_path):
    ModelVersion.objects.filter(pk=version.pk).update(status=ModelVersion.Status.QUARANTINED,
                                                      trusted_sha256=version.sha256, trusted_by=people["admin"])
    response = api_as(people["scientist"]).get(_url(deployment))
    assert response.status_code == 403 and "only a project admin" in response.json()["detail"]
    root, _ = _download(api_as(people["admin"]), deployment, tmp_path)
    manifest = json.loads((root / "MANIFEST.json").read_text())
    assert manifest["model"]["contains_pickle"] is True and manifest["model"]["trusted_by"] == "admin"
    assert "this archive contains a pickle" in (root / "README.md").read_text()


def test_panel_shows_the_download_to_those_who_may_deploy(people, deployment):
    def panel(user):
        request = RequestFactory().get("/")
        request.user = user
        return render_to_string("deployments/_package.html", {"deployment": deployment, "request": request})

    html = panel(people["scientist"])
    assert f"/api/v1/deployments/{deployment.slug}/package/" in html and "Download" in html
    assert "python serve.py" in html
    assert f"/api/v1/deployments/{deployment.slug}/package/" not in panel(people["viewer"])


def test_deployment_page_includes_the_panel(people, deployment, client_as):
    page = client_as(people["scientist"]).get(f"/deployments/{deployment.slug}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="package-heading"' in html and f"/api/v1/deployments/{deployment.slug}/package/" in html


# --- Production serving config (gunicorn.conf.py, docker-compose.yml) -----------------------------------------

ROOT = Path(__file__).resolve().parents[2]


def _gunicorn_config(monkeypatch, **env) -> dict:
    import runpy

    for name in ("WEB_CONCURRENCY", "WEB_THREADS", "WEB_TIMEOUT", "PORTAL_SERVING_TIMEOUT_SECONDS",
                 "WEB_MAX_REQUESTS", "WEB_MAX_REQUESTS_JITTER"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(ROOT / "gunicorn.conf.py"))


def test_gunicorn_config_defaults_suit_serving(monkeypatch):
    config = _gunicorn_config(monkeypatch)
    assert config["workers"] == config["cpus"]() >= 1
    assert config["worker_class"] == "gthread" and config["threads"] == 4
    assert config["timeout"] > 30 and config["graceful_timeout"] > 30 and config["keepalive"] > 60
    assert config["max_requests"] == 0  # recycling drops keep-alive POSTs: only on request
    recycled = _gunicorn_config(monkeypatch, WEB_MAX_REQUESTS="20000")
    assert 0 < recycled["max_requests_jitter"] < recycled["max_requests"] == 20000
    assert config["preload_app"] is False


def test_gunicorn_config_reads_the_environment_and_refuses_bad_values(monkeypatch):
    config = _gunicorn_config(monkeypatch, WEB_CONCURRENCY="3", WEB_THREADS="8", PORTAL_SERVING_TIMEOUT_SECONDS="300")
    assert (config["workers"], config["threads"], config["timeout"]) == (3, 8, 330)
    with pytest.raises(SystemExit, match="WEB_THREADS"):
        _gunicorn_config(monkeypatch, WEB_THREADS="many")
    with pytest.raises(SystemExit, match="WEB_TIMEOUT must be at least 31"):
        _gunicorn_config(monkeypatch, WEB_TIMEOUT="20")


def test_a_gunicorn_worker_freezes_its_start_up_heap(monkeypatch, db):
    """Start-up objects leave the collector's sight, so a full collection does not pause every request thread
    for the ~100 ms it takes to walk Django, the views and the models (the load test's latency tail)."""
    import gc

    config = _gunicorn_config(monkeypatch, WEB_WARM_MODELS="0")
    gc.unfreeze()
    try:
        config["post_worker_init"](None)
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # Django, the URL map's views and their imports
    finally:
        gc.unfreeze()


def test_compose_web_service_uses_the_gunicorn_config():
    import yaml

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    web = compose["services"]["web"]
    gunicorn = ["gunicorn", "--config", "gunicorn.conf.py", "portal.wsgi:application"]
    # Pages yield the CPU to the API and predictions on a busy host.
    assert web["command"] == ["nice", "-n", "${WEB_NICE:-5}", *gunicorn]
    assert web["environment"]["WEB_CONCURRENCY"] == "${WEB_CONCURRENCY:-0}"
    assert "PORTAL_SERVING_TIMEOUT_SECONDS" in web["environment"]
    # Predictions have gunicorn processes of their own, answering nothing else (tests/deployments/test_serving.py),
    # and so do API clients (the whole app, reached through the proxy's /api/ route), both not niced.
    serving, api = compose["services"]["serving"], compose["services"]["api"]
    assert serving["command"] == api["command"] == gunicorn
    assert serving["environment"]["PORTAL_SERVICE"] == "serving" and "PORTAL_SERVICE" not in api["environment"]
    assert api["environment"]["WEB_CONCURRENCY"] == "${API_CONCURRENCY:-0}"
    assert "PORTAL_SERVING_TIMEOUT_SECONDS" in serving["environment"]
    assert len({str(web["ports"]), str(serving["ports"]), str(api["ports"])}) == 3
    # Background work yields the CPU to both.
    for name in ("worker", "beat"):
        assert compose["services"][name]["command"][:3] == ["nice", "-n", "${WORKER_NICE:-5}"]
