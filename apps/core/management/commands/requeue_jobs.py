"""Send again the jobs a broker outage or a killed worker left behind (beat does this every minute too)."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from apps.core import services


class Command(BaseCommand):
    help = ("Send queued jobs the broker never got (or lost) to the workers again. "
            "--worker NAME also re-sends the jobs that node was running when it was killed.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--worker", default="", help="a Celery node name (celery@host) that was restarted")

    def handle(self, *args, worker: str = "", **options) -> None:
        sent = services.requeue_stalled_jobs(restarted_worker=worker)
        self.stdout.write(f"Sent {len(sent)} job(s) again.")
        for job_id in sent:
            self.stdout.write(f"  {job_id}")
