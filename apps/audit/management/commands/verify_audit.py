from django.core.management.base import BaseCommand, CommandError

from apps.audit.services import checkpoint, verify_chain


class Command(BaseCommand):
    help = "Verify the audit trail's hash chain; exits non-zero and names the first broken event."

    def add_arguments(self, parser):
        parser.add_argument("--checkpoint", action="store_true",
                            help="After a clean run, append a signed checkpoint of the head to the "
                                 "checkpoint file (the nightly task does this too).")

    def handle(self, *args, **options):
        report = verify_chain()
        if not report.ok:
            raise CommandError(f"Audit chain BROKEN at event #{report.first_bad} "
                               f"({report.reason}); {report.events} event(s) read.")
        self.stdout.write(self.style.SUCCESS(f"Audit chain OK: {report.events} event(s) verified."))
        if options["checkpoint"] and checkpoint(report):
            self.stdout.write(f"Checkpoint written at event #{report.last_sequence}.")
