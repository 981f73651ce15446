# Portal image: one image for every role (web, Celery worker and beat, migrations, the MLflow server).
# Build: docker build -t portal:local .   Run: see docker-compose.yml and docs/operations.md.
FROM python:3.11-slim

# PYTHONPATH=/app: gunicorn adds its cwd to sys.path but celery does not; without it, celery would import
# the copy pip put in site-packages, whose BASE_DIR has no templates/ or static/.
# gunicorn reads gunicorn.conf.py (workers: WEB_CONCURRENCY, default one per CPU; see docs/operations.md).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app \
    DJANGO_SETTINGS_MODULE=portal.settings \
    PORTAL_VAR_DIR=/var/lib/portal

# bubblewrap is the sandbox the portal opens uploaded pickles in; without it pickle imports are refused.
RUN apt-get update \
 && apt-get install -y --no-install-recommends bubblewrap \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 portal \
 && useradd --system --uid 10001 --gid portal --home-dir /var/lib/portal --no-create-home \
      --shell /usr/sbin/nologin portal

WORKDIR /app

# Dependencies first, read from pyproject.toml, so a code change does not reinstall MLflow and friends.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

COPY . .
RUN pip install . && rm -rf build ./*.egg-info

# Static files are collected into the image (/app/staticfiles), not into the var volume: STATIC_ROOT is
# PORTAL_VAR_DIR/staticfiles, so that path is a symlink to the image's copy. A volume keeps the symlink,
# and after an upgrade it points at the new image's files rather than at stale ones from the old image.
# The SECRET_KEY here is a throwaway that exists only for this command (settings refuse DEBUG=0 without
# one); memory:// keeps settings from creating filesystem-broker folders in the image.
RUN mkdir -p /var/lib/portal /mlartifacts /app/staticfiles \
 && ln -s /app/staticfiles /var/lib/portal/staticfiles \
 && DEBUG=0 SECRET_KEY=build-only-collectstatic-not-a-secret CELERY_BROKER_URL=memory:// \
      python manage.py collectstatic --noinput \
 && chown -hR portal:portal /var/lib/portal /mlartifacts

# No VOLUME line (it would give one-shot containers anonymous volumes); compose mounts named volumes on
# /var/lib/portal and /mlartifacts, which start with this ownership so the non-root user can write.
USER portal
EXPOSE 8000

# No HEALTHCHECK here: the same image runs the worker, beat and MLflow; docker-compose.yml has one each.
# gunicorn.conf.py: port 8000, access log to stdout, gthread workers, timeouts above the prediction timeout.
CMD ["gunicorn", "--config", "gunicorn.conf.py", "portal.wsgi:application"]
