"""Periodic verification of the audit chain, so tampering is noticed even if nobody asks."""

from __future__ import annotations

import logging

from celery import shared_task
from django.core.mail import mail_admins

from apps.audit.services import checkpoint, verify_chain

logger = logging.getLogger(__name__)


@shared_task(name="apps.audit.tasks.verify_audit_chain_task")
def verify_audit_chain_task() -> dict:
    report = verify_chain()
    # A clean run anchors the head outside the database, so a later cut-off tail cannot pass.
    checkpoint(report)
    if not report.ok:
        logger.error("Audit chain broken at event #%s: %s", report.first_bad, report.reason)
        mail_admins("Audit chain verification failed",
                    f"The audit chain is broken at event #{report.first_bad}: {report.reason}.\n"
                    "Investigate database access around that event's time.")
    return report.as_dict()
