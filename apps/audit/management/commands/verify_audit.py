from django.core.management.base import BaseCommand, CommandError

from apps.audit.services import verify_chain


class Command(BaseCommand):
    help = "Verify the audit trail's hash chain; exits non-zero and names the first broken event."

    def handle(self, *args, **options):
        report = verify_chain()
        if not report.ok:
            raise CommandError(f"Audit chain BROKEN at event #{report.first_bad} "
                               f"({report.reason}); {report.events} event(s) read.")
        self.stdout.write(self.style.SUCCESS(f"Audit chain OK: {report.events} event(s) verified."))
