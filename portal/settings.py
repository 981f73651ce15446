"""Portal settings: one file, configured by environment variables (see README.md, "Configuration").

Embedded defaults need no server: SQLite, a filesystem Celery broker, a file cache and an MLflow store,
all under PORTAL_VAR_DIR. Production points DATABASE_URL, CELERY_BROKER_URL, REDIS_URL and
MLFLOW_TRACKING_URI at real services and sets DEBUG=0 with a real SECRET_KEY.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

import dj_database_url
import plotly
from celery.schedules import crontab
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str | None = None) -> str:
    value = os.environ.get(name)
    if value is None or value == "":
        if default is None:
            raise ImproperlyConfigured(f"Set the environment variable {name}.")
        return default
    return value


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false, yes/no), not {value!r}.")


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, not {value!r}.") from None


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)

VAR_DIR = Path(env_str("PORTAL_VAR_DIR", str(BASE_DIR / "var"))).resolve()
VAR_DIR.mkdir(parents=True, exist_ok=True)

# A fixed key is tolerable only in development; production must bring its own.
_DEV_SECRET_KEY = "dev-only-insecure-key-7b1f0c9e2d4a4e8b9c3f6a5d8e7b2c1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5"
if not DEBUG and not os.environ.get("SECRET_KEY"):
    raise ImproperlyConfigured("Set the environment variable SECRET_KEY (production), "
                               "or DEBUG=1 to use the development key.")
SECRET_KEY = env_str("SECRET_KEY", _DEV_SECRET_KEY)
# Previous keys, still accepted for what they signed (sessions, links, and the audit key derived from them), so a
# rotation need not sign everybody out at once; drop them once their sessions have expired.
SECRET_KEY_FALLBACKS = env_list("SECRET_KEY_FALLBACKS", [])

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# Base64 (urlsafe) 32-byte key for encrypting datasets at rest; empty disables encryption.
PORTAL_ENCRYPTION_KEY = os.environ.get("PORTAL_ENCRYPTION_KEY", "")
if PORTAL_ENCRYPTION_KEY:
    try:
        if len(base64.urlsafe_b64decode(PORTAL_ENCRYPTION_KEY.encode())) != 32:
            raise ValueError
    except (ValueError, binascii.Error):
        raise ImproperlyConfigured(
            "PORTAL_ENCRYPTION_KEY must be 32 bytes, urlsafe-base64 encoded "
            '(python -c "import os,base64;print(base64.urlsafe_b64encode(os.urandom(32)).decode())").'
        ) from None
# Previous keys, comma-separated: files written under them stay readable (and rotate_encryption_key
# moves them to PORTAL_ENCRYPTION_KEY); nothing new is ever encrypted with them.
PORTAL_ENCRYPTION_OLD_KEYS = env_list("PORTAL_ENCRYPTION_OLD_KEYS", [])
for _position, _old_key in enumerate(PORTAL_ENCRYPTION_OLD_KEYS, start=1):
    try:
        if len(base64.urlsafe_b64decode(_old_key.encode())) != 32:
            raise ValueError
    except (ValueError, binascii.Error):
        raise ImproperlyConfigured(
            f"PORTAL_ENCRYPTION_OLD_KEYS: key number {_position} is not 32 bytes, urlsafe-base64 encoded."
        ) from None
# Largest dataset upload, in bytes.
PORTAL_MAX_UPLOAD_BYTES = env_int("PORTAL_MAX_UPLOAD_BYTES", 2 * 1024**3)
if PORTAL_MAX_UPLOAD_BYTES <= 0:
    raise ImproperlyConfigured("PORTAL_MAX_UPLOAD_BYTES must be a positive number of bytes.")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "template_partials",
    "bootstrap",
    "apps.core",
    "apps.audit",
    "apps.accounts",
    "apps.datasets",
    "apps.registry",
    "apps.approvals",
    "apps.deployments",
    "apps.monitoring",
    "apps.guidance",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "apps.audit.middleware.AuditContextMiddleware",
    # After auth, messages and the audit context: it signs out, says why and audits it with the client IP.
    "apps.accounts.middleware.SessionIdleTimeoutMiddleware",
    "apps.accounts.middleware.PermissionsPolicyMiddleware",
]

# PORTAL_SERVICE=serving: a gunicorn that answers only the invocations endpoint and /healthz (docker-compose's
# `serving` service, behind the reverse proxy's route for invocations), so page renders never share a process, and
# its GIL, with predictions. Every other path is a 404 there.
PORTAL_SERVICE = env_str("PORTAL_SERVICE", "web").strip().lower()
if PORTAL_SERVICE not in {"web", "serving"}:
    raise ImproperlyConfigured(f"PORTAL_SERVICE must be web or serving, not {PORTAL_SERVICE!r}.")
ROOT_URLCONF = "portal.urls_serving" if PORTAL_SERVICE == "serving" else "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"
ASGI_APPLICATION = "portal.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "apps.accounts.context_processors.navigation",
                "apps.approvals.context_processors.approvals",
                "apps.accounts.context_processors.notifications",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------------
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'portal.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE takes the write lock at BEGIN, so concurrent writers queue instead of failing
    # and the audit chain (read head, append) cannot fork.
    DATABASES["default"]["OPTIONS"] = {"transaction_mode": "IMMEDIATE", "timeout": 30}
    # A file (not in-memory) test database, so a real Celery worker process can share it in tests.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-portal.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache (login lockout, API throttling) ---------------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    # A file cache is shared by the web, worker and beat processes, unlike the local-memory one.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
    }

# --- Auth ----------------------------------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
# The SSO backend is always listed (cheap: it does nothing unless SSO is configured) so that sessions of
# SSO users keep resolving after a configuration change.
AUTHENTICATION_BACKENDS = ["apps.accounts.backends.LockoutModelBackend", "apps.accounts.sso.PortalOIDCBackend"]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Failed logins per (username, client IP) before the pair is locked out, and for how long.
LOGIN_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5)
LOGIN_LOCKOUT_SECONDS = env_int("LOGIN_LOCKOUT_SECONDS", 15 * 60)
PASSWORD_RESET_TIMEOUT = 60 * 60 * 24 * 3
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE", 60 * 60 * 12)
# A browser session left alone this long is signed out (apps/accounts/middleware.py); 0 turns it off.
# API tokens are not affected.
PORTAL_SESSION_IDLE_MINUTES = env_int("PORTAL_SESSION_IDLE_MINUTES", 30)
if PORTAL_SESSION_IDLE_MINUTES < 0:
    raise ImproperlyConfigured("PORTAL_SESSION_IDLE_MINUTES must be 0 (off) or a positive number of minutes.")

# --- Single sign-on (OpenID Connect; see apps/accounts/sso.py) -------------------------------------
# SSO is on when an issuer and a client id are set. Endpoints are discovered from
# <issuer>/.well-known/openid-configuration on first use, so startup needs no network.
OIDC_ISSUER = os.environ.get("OIDC_ISSUER", "").strip().rstrip("/")
OIDC_RP_CLIENT_ID = os.environ.get("OIDC_CLIENT_ID", "")
OIDC_RP_CLIENT_SECRET = os.environ.get("OIDC_CLIENT_SECRET", "")
OIDC_RP_SCOPES = env_str("OIDC_SCOPES", "openid email profile")
OIDC_GROUPS_CLAIM = env_str("OIDC_GROUPS_CLAIM", "groups")
OIDC_PROVIDER_NAME = env_str("OIDC_PROVIDER_NAME", "single sign-on")
OIDC_TIMEOUT = env_int("OIDC_TIMEOUT_SECONDS", 10)
OIDC_RP_SIGN_ALGO = env_str("OIDC_SIGN_ALGO", "RS256")
OIDC_USE_PKCE = env_bool("OIDC_USE_PKCE", True)
# "Sign out" also ends the session at the provider (RP-initiated logout) when it offers an end_session_endpoint;
# the ID token is kept in the (server-side) session as the hint that logout needs.
OIDC_SIGN_OUT_AT_PROVIDER = env_bool("OIDC_SIGN_OUT_AT_PROVIDER", True)
OIDC_STORE_ID_TOKEN = OIDC_SIGN_OUT_AT_PROVIDER
SSO_ENABLED = bool(OIDC_ISSUER and OIDC_RP_CLIENT_ID)
if OIDC_ISSUER and not OIDC_ISSUER.startswith(("https://", "http://")):
    raise ImproperlyConfigured(f"OIDC_ISSUER must be an http(s) URL, not {OIDC_ISSUER!r}.")
if "openid" not in OIDC_RP_SCOPES.split():
    raise ImproperlyConfigured("OIDC_SCOPES must include 'openid'.")
# Who may use the password form (and the password-based API token endpoint): everyone ("on"), only staff
# and superusers, the break-glass accounts ("admins"), or nobody ("off", which needs SSO).
PORTAL_LOCAL_LOGIN = env_str("PORTAL_LOCAL_LOGIN", "on").strip().lower()
if PORTAL_LOCAL_LOGIN not in {"on", "admins", "off"}:
    raise ImproperlyConfigured(f"PORTAL_LOCAL_LOGIN must be on, admins or off, not {PORTAL_LOCAL_LOGIN!r}.")
if PORTAL_LOCAL_LOGIN == "off" and not SSO_ENABLED:
    raise ImproperlyConfigured("PORTAL_LOCAL_LOGIN=off leaves nobody able to sign in: configure SSO "
                               "(OIDC_ISSUER and OIDC_CLIENT_ID) or use PORTAL_LOCAL_LOGIN=admins.")

# Only honour X-Forwarded-For when a trusted proxy (the production gunicorn behind nginx) sets it.
USE_X_FORWARDED_FOR = env_bool("USE_X_FORWARDED_FOR", False)

# --- Audit trail (apps/audit/hashing.py, checkpoints.py) ------------------------------------------------
# New events are HMAC-signed with this key, which the database never holds (unset: a key derived from
# SECRET_KEY). Set it before migrating to audit 0003; to rotate, move the old key to the fallbacks.
PORTAL_AUDIT_KEY = env_str("PORTAL_AUDIT_KEY", "")
PORTAL_AUDIT_KEY_FALLBACKS = env_list("PORTAL_AUDIT_KEY_FALLBACKS", [])
# Signed checkpoints of the verified chain head, outside the database (ship it off the host with the logs).
PORTAL_AUDIT_CHECKPOINT_FILE = env_str("PORTAL_AUDIT_CHECKPOINT_FILE", str(VAR_DIR / "audit" / "checkpoints.jsonl"))

# --- Security (secure by default outside DEBUG; `manage.py check --deploy` stays quiet) --------------
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # container health checks speak plain HTTP inside the network
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", not DEBUG)
if env_bool("SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"  # Lax, not Strict: links from e-mails and the SSO callback arrive signed in
# No script reads the CSRF cookie (forms and htmx take the token from the page), so keep it from scripts too.
CSRF_COOKIE_HTTPONLY = True
CSRF_COOKIE_SAMESITE = "Lax"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
# Sent by apps.accounts.middleware.PermissionsPolicyMiddleware: the portal uses no device or sensor.
PORTAL_PERMISSIONS_POLICY = ", ".join(f"{feature}=()" for feature in (
    "accelerometer", "autoplay", "camera", "display-capture", "geolocation", "gyroscope", "magnetometer",
    "microphone", "midi", "payment", "usb", "browsing-topics"))
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 10 * 1024 * 1024)

# Everything is served from our own origin (agencies run air-gapped): no CDN, no inline scripts.
# Plotly injects <style> elements, hence 'unsafe-inline' for styles only.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF, "'unsafe-inline'"],
        "img-src": [SELF, "data:"],
        "font-src": [SELF, "data:"],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

# --- Internationalisation ------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# --- Static and media files --------------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(VAR_DIR / "staticfiles")))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# plotly.js ships inside the plotly package; serve it from there rather than copying it into the repo.
STATICFILES_DIRS = [BASE_DIR / "static", ("plotly", Path(plotly.__file__).parent / "package_data")]
MEDIA_ROOT = VAR_DIR / "media"
MEDIA_URL = "media/"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = DEBUG

# --- E-mail ----------------------------------------------------------------------------------------
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "portal@localhost")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
ADMINS = [("Portal operators", a) for a in env_list("PORTAL_ADMIN_EMAILS", [])]
# Links in notification e-mails are built on this address (no trailing slash needed).
PORTAL_BASE_URL = env_str("PORTAL_BASE_URL", "http://127.0.0.1:8000")
# Deciders are reminded (daily) of approval requests waiting longer than this.
PORTAL_APPROVAL_REMINDER_DAYS = env_int("PORTAL_APPROVAL_REMINDER_DAYS", 3)

# --- Celery ----------------------------------------------------------------------------------------
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "celery" / "queue"
    _broker_dir.mkdir(parents=True, exist_ok=True)
    (VAR_DIR / "celery" / "processed").mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir),
        "data_folder_out": str(_broker_dir),
        "processed_folder": str(VAR_DIR / "celery" / "processed"),
        "control_folder": str(VAR_DIR / "celery" / "control"),  # exchange tables; default is the cwd
        "store_processed": False,
    }
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True  # progress and results live on core.Job rows
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    "verify-audit-chain-nightly": {
        "task": "apps.audit.tasks.verify_audit_chain_task",
        "schedule": 24 * 60 * 60,
    },
    "expire-approvals-hourly": {
        "task": "apps.approvals.tasks.expire_approvals_task",
        "schedule": 60 * 60,
    },
    "remind-pending-approvals-daily": {
        "task": "apps.approvals.tasks.remind_pending_task",
        "schedule": 24 * 60 * 60,
    },
}
# Jobs (apps/core/services.py): a job whose worker process died this many times is failed, not run again;
# a queued job the broker never started is sent again after this many minutes (at once if it was never sent).
PORTAL_JOB_MAX_ATTEMPTS = env_int("PORTAL_JOB_MAX_ATTEMPTS", 3)
PORTAL_JOB_REQUEUE_MINUTES = env_int("PORTAL_JOB_REQUEUE_MINUTES", 15)
if PORTAL_JOB_MAX_ATTEMPTS <= 0 or PORTAL_JOB_REQUEUE_MINUTES <= 0:
    raise ImproperlyConfigured("PORTAL_JOB_MAX_ATTEMPTS and PORTAL_JOB_REQUEUE_MINUTES must be positive numbers.")
CELERY_BEAT_SCHEDULE["requeue-stalled-jobs"] = {"task": "apps.core.tasks.requeue_stalled_jobs_task", "schedule": 60}
# New versions of followed MLflow models (RegisteredModel.follow_mlflow_name); 0 turns the sync off.
PORTAL_MLFLOW_SYNC_MINUTES = env_int("PORTAL_MLFLOW_SYNC_MINUTES", 15)
if PORTAL_MLFLOW_SYNC_MINUTES > 0:
    CELERY_BEAT_SCHEDULE["sync-followed-mlflow-models"] = {
        "task": "apps.registry.tasks.sync_mlflow_task",
        "schedule": PORTAL_MLFLOW_SYNC_MINUTES * 60,
    }

# --- Serving (the invocations endpoint) -------------------------------------------------------------
# Per-deployment overrides live on the deployment; these are the site defaults and hard caps.
PORTAL_SERVING_MAX_ROWS = env_int("PORTAL_SERVING_MAX_ROWS", 10_000)
PORTAL_SERVING_MAX_BODY_BYTES = env_int("PORTAL_SERVING_MAX_BODY_BYTES", 20 * 1024 * 1024)
PORTAL_SERVING_RATE_LIMIT_PER_MINUTE = env_int("PORTAL_SERVING_RATE_LIMIT_PER_MINUTE", 6000)
PORTAL_SERVING_TIMEOUT_SECONDS = env_int("PORTAL_SERVING_TIMEOUT_SECONDS", 30)
# How long a serving process trusts its cached token and routing before looking again (revocations and
# rollouts made through another process take effect within this many seconds; the same process: at once).
PORTAL_SERVING_CACHE_SECONDS = env_int("PORTAL_SERVING_CACHE_SECONDS", 2)
PORTAL_PREDICTION_LOG_DAYS = env_int("PORTAL_PREDICTION_LOG_DAYS", 365)
PORTAL_PREDICTION_DRAIN_SECONDS = env_int("PORTAL_PREDICTION_DRAIN_SECONDS", 5)
# Batch scoring: rows per chunk task, and the largest chunk whose inputs and outputs are logged in full.
PORTAL_BATCH_CHUNK_ROWS = env_int("PORTAL_BATCH_CHUNK_ROWS", 20_000)
PORTAL_BATCH_LOG_ROWS = env_int("PORTAL_BATCH_LOG_ROWS", 1_000)
# After Redis fails to answer, serving writes the prediction log straight to the database for this long.
PORTAL_REDIS_RETRY_SECONDS = env_int("PORTAL_REDIS_RETRY_SECONDS", 5)
# Before a model that runs its own code may serve, it answers one prediction in a child process within these
# limits (apps/deployments/smoke.py); a hang or a memory blow-up refuses the deploy, the current version stays.
PORTAL_DEPLOY_CHECK = env_bool("PORTAL_DEPLOY_CHECK", True)
PORTAL_DEPLOY_CHECK_SECONDS = env_int("PORTAL_DEPLOY_CHECK_SECONDS", 60)
PORTAL_DEPLOY_CHECK_MEMORY_MB = env_int("PORTAL_DEPLOY_CHECK_MEMORY_MB", 4096)
for _name in ("PORTAL_SERVING_MAX_ROWS", "PORTAL_SERVING_MAX_BODY_BYTES", "PORTAL_SERVING_TIMEOUT_SECONDS",
              "PORTAL_PREDICTION_DRAIN_SECONDS", "PORTAL_BATCH_CHUNK_ROWS", "PORTAL_REDIS_RETRY_SECONDS",
              "PORTAL_DEPLOY_CHECK_SECONDS", "PORTAL_DEPLOY_CHECK_MEMORY_MB"):
    if globals()[_name] <= 0:
        raise ImproperlyConfigured(f"{_name} must be a positive number.")
CELERY_BEAT_SCHEDULE["drain-prediction-log"] = {
    "task": "apps.deployments.tasks.drain_prediction_log_task",
    "schedule": PORTAL_PREDICTION_DRAIN_SECONDS,
}
CELERY_BEAT_SCHEDULE["prune-prediction-log-daily"] = {
    "task": "apps.deployments.tasks.prune_prediction_log_task",
    "schedule": 24 * 60 * 60,
}

# --- Monitoring ---------------------------------------------------------------------------------------
# Rollups and alert evaluation run every PORTAL_MONITORING_SECONDS; webhooks are retried on the same beat.
PORTAL_MONITORING_SECONDS = env_int("PORTAL_MONITORING_SECONDS", 60)
if PORTAL_MONITORING_SECONDS <= 0:
    raise ImproperlyConfigured("PORTAL_MONITORING_SECONDS must be a positive number.")
CELERY_BEAT_SCHEDULE.update({
    "monitoring-rollups": {"task": "apps.monitoring.tasks.rollup_task", "schedule": PORTAL_MONITORING_SECONDS},
    "monitoring-alerts": {"task": "apps.monitoring.tasks.evaluate_alerts_task",
                          "schedule": PORTAL_MONITORING_SECONDS},
    "monitoring-webhooks": {"task": "apps.monitoring.tasks.deliver_webhooks_task",
                            "schedule": PORTAL_MONITORING_SECONDS},
    "monitoring-scheduled-retraining": {"task": "apps.monitoring.tasks.scheduled_retraining_task",
                                        "schedule": 60 * 60},
    # Monday morning (beat's time zone, TIME_ZONE); sent at most once per member and ISO week whatever beat does.
    "monitoring-weekly-digest": {"task": "apps.monitoring.tasks.weekly_digest_task",
                                 "schedule": crontab(day_of_week="mon", hour=7, minute=0)},
})

# --- MLflow ------------------------------------------------------------------------------------------
(VAR_DIR / "mlflow").mkdir(exist_ok=True)
MLFLOW_TRACKING_URI = env_str("MLFLOW_TRACKING_URI", f"sqlite:///{VAR_DIR / 'mlflow' / 'mlflow.db'}")
MLFLOW_ARTIFACT_ROOT = env_str("MLFLOW_ARTIFACT_ROOT", str(VAR_DIR / "mlflow" / "artifacts"))

# --- REST API ---------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "apps.accounts.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "apps.core.api.exception_handler",
    "DEFAULT_PARSER_CLASSES": [
        "apps.core.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_THROTTLE_RATES": {"token": env_str("TOKEN_THROTTLE_RATE", "10/min")},
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Portal API",
    "DESCRIPTION": "Import, validate, approve, deploy and monitor ML models. See shared/API.md.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Several models have a `status`; name each choice set so the schema's enums are stable.
    "ENUM_NAME_OVERRIDES": {
        "JobStatusEnum": "apps.core.models.Job.Status",
        "DatasetVersionStatusEnum": "apps.datasets.models.DatasetVersion.Status",
        "DatasetFormatEnum": "apps.datasets.models.DatasetVersion.Format",
        "ModelVersionStatusEnum": "apps.registry.models.ModelVersion.Status",
        "ModelFormatEnum": "apps.registry.models.ModelVersion.Format",
        "ApprovalStatusEnum": "apps.approvals.models.ApprovalRequest.Status",
        "DecisionVerdictEnum": "apps.approvals.models.Decision.Verdict",
        "ValidationVerdictEnum": "apps.registry.models.ModelValidation.Verdict",
        "DeploymentStatusEnum": "apps.deployments.models.Deployment.Status",
        "ChallengerModeEnum": "apps.deployments.models.Deployment.ChallengerMode",
        "PredictionRoleEnum": "apps.deployments.models.PredictionLog.Role",
        "PredictionSourceEnum": "apps.deployments.models.PredictionLog.Source",
        "MembershipRoleEnum": "apps.accounts.models.Membership.Role",
    },
    # Every operation documents the portal's error body ({"detail", "errors"}) for the codes it can answer.
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums",
                             "apps.core.api.document_error_responses"],
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}
