"""The audit packet of a model version: one self-contained HTML document an auditor can read and print.

Sections come from a registry (`register_section`): approvals registers the model card, lineage,
validation, approvals and audit trail; apps to its right (deployments, monitoring) add theirs from their
own `AppConfig.ready()`, so approvals never imports them. No PDF: no maintained pure-Python PDF library is
installed; the document is laid out to be printed (or saved as PDF) from a browser, a section per page.
"""

from __future__ import annotations

import logging

from django.template.loader import render_to_string
from django.utils import timezone

from apps.accounts.permissions import Action, require
from apps.approvals.packet.registry import (
    ORDER_APPROVALS,
    ORDER_AUDIT,
    ORDER_CARD,
    ORDER_DEPLOYMENTS,
    ORDER_LINEAGE,
    ORDER_MONITORING,
    ORDER_VALIDATION,
    Section,
    When,
    register_section,
    registered_sections,
    unregister_section,
    when,
)
from apps.approvals.services import record_packet_export
from apps.registry.models import ModelVersion

logger = logging.getLogger(__name__)

__all__ = [
    "ORDER_APPROVALS", "ORDER_AUDIT", "ORDER_CARD", "ORDER_DEPLOYMENTS", "ORDER_LINEAGE", "ORDER_MONITORING",
    "ORDER_VALIDATION", "Section", "When", "api_urlpatterns", "build_packet", "register_section",
    "registered_sections", "unregister_section", "urlpatterns", "when",
]

def _built_sections(version: ModelVersion, user) -> list[dict]:
    built = []
    for section in registered_sections():
        try:
            data = section.build(version, user)
        except Exception:  # one contributed section must not keep the auditor from the rest
            logger.exception("Audit packet section %r failed for %s", section.key, version)
            data, failed = None, True
        else:
            failed = False
        if data is None and not failed:
            continue  # nothing to say: the section is left out (and out of the contents)
        built.append({"key": section.key, "title": section.title, "template": section.template,
                      "data": data, "failed": failed})
    return built


def build_packet(version: ModelVersion, *, user, via: str = "") -> str:
    """The packet as this project member may see it; outsiders get PermissionDenied (views turn it into 404).

    The export itself is recorded as `audit.packet_export` (after the document is assembled, so the chain
    is not held locked while it is verified and rendered).
    """
    require(user, Action.VIEW_PROJECT, version)
    version = (ModelVersion.objects.select_related(
        "model__project", "model__owner", "created_by", "trusted_by", "training_dataset__dataset", "converted_from")
        .get(pk=version.pk))
    exported_at = timezone.now()
    sections = _built_sections(version, user)
    html = render_to_string("approvals/packet.html", {
        "version": version, "model": version.model, "project": version.model.project, "sections": sections,
        "exported_by": user.get_username(), "exported_at": when(exported_at),
    })
    record_packet_export(version, actor=user, sections=[s["key"] for s in sections], via=via)
    return html


from apps.approvals.packet.views import api_urlpatterns, urlpatterns  # noqa: E402 - needs build_packet above
