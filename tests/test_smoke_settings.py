"""Settings: production configuration passes Django's deployment checks; bad values fail loudly."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(env_overrides: dict, *args: str) -> subprocess.CompletedProcess:
    # Only what production would have: no development flags leaking in from the test process.
    env = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "SECRET_KEY", "DJANGO_ALLOW_ASYNC_UNSAFE"}}
    env.update(env_overrides)
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


PRODUCTION = {
    "DEBUG": "0",
    "SECRET_KEY": "x7#kP9!qL2@vN5$wR8^zT1&yB4*cF6(hJ3)mD0_sG-eA+uW=iO",
    "ALLOWED_HOSTS": "portal.example.gov",
}


def test_check_deploy_is_clean_with_documented_production_variables():
    result = _run(PRODUCTION, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_without_secret_key_refuses_to_start():
    result = _run({"DEBUG": "0"}, "check")
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_malformed_boolean_names_the_variable():
    result = _run({**PRODUCTION, "SECURE_SSL_REDIRECT": "maybe"}, "check")
    assert result.returncode != 0
    assert "SECURE_SSL_REDIRECT" in result.stderr


def test_bad_encryption_key_is_refused_with_a_hint():
    result = _run({**PRODUCTION, "PORTAL_ENCRYPTION_KEY": "too-short"}, "check")
    assert result.returncode != 0
    assert "PORTAL_ENCRYPTION_KEY" in result.stderr
