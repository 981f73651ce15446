"""Dataset fixtures: small real files and a helper that runs the profiling job as the worker would."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.core.models import Job
from apps.datasets import services
from apps.datasets.models import DatasetVersion

PEOPLE_CSV = (
    "id,name,email,age,income,segment,signup_date\n"
    + "".join(
        f"{i},{first} {last},{first.lower()}.{last.lower()}{i}@example.org,{20 + i % 50},"
        f"{'' if i % 10 == 0 else 30000 + 137 * i},{['gold', 'silver', 'bronze'][i % 3]},"
        f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}\n"
        for i, (first, last) in enumerate(
            [("Alice", "Martin"), ("Bob", "Durand"), ("Chloe", "Bernard"), ("David", "Petit"),
             ("Emma", "Robert"), ("Felix", "Richard"), ("Gina", "Moreau"), ("Hugo", "Simon")] * 25)
    )
).encode()


@pytest.fixture
def people_csv() -> bytes:
    return PEOPLE_CSV


def upload(name: str, content: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content, content_type="application/octet-stream")


def run_profiling(version: DatasetVersion) -> DatasetVersion:
    """Run the version's profiling job in this process, exactly as the Celery task does."""
    services.profile_version(str(version.profile_job_id))
    version.refresh_from_db()
    return version


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def profiled(people, project, media, people_csv, django_capture_on_commit_callbacks):
    """A dataset "customers" with one profiled version of PEOPLE_CSV, uploaded by the scientist."""
    dataset = services.create_dataset(project, actor=people["scientist"], name="customers")
    with django_capture_on_commit_callbacks(execute=False):
        version, _ = services.upload_version(dataset, actor=people["scientist"],
                                             uploaded=upload("people.csv", people_csv))
    return run_profiling(version)


def job_of(version: DatasetVersion) -> Job:
    return Job.objects.get(pk=version.profile_job_id)


