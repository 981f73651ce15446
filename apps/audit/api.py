"""Audit trail API: the events (filterable, or as CSV) and the chain verification."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, serializers, viewsets
from rest_framework.decorators import api_view
from rest_framework.response import Response

from apps.accounts.permissions import Action, projects_with_action
from apps.audit.models import AuditEvent
from apps.audit.services import filter_events, verify_chain


class AuditEventSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="uuid", read_only=True)
    actor = serializers.CharField(source="actor_label", read_only=True)
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True)  # site-wide events
    object = serializers.CharField(source="object_repr", read_only=True)

    class Meta:
        model = AuditEvent
        fields = ["id", "sequence", "created_at", "actor", "action", "object_type", "object_id", "object",
                  "project", "details", "client_ip", "prev_hash", "hash"]
        read_only_fields = fields


@extend_schema(parameters=[OpenApiParameter(name, str, description=desc) for name, desc in (
    ("project", "project slug"), ("actor", "username"), ("action", "action or its prefix, e.g. membership."),
    ("object", "object id, or type:id"), ("since", "date or datetime"), ("until", "date or datetime"))])
class AuditEventViewSet(viewsets.ReadOnlyModelViewSet):
    """Audit events the caller may read: their own, and those of projects where they may view the audit."""

    serializer_class = AuditEventSerializer
    lookup_field = "uuid"

    def get_queryset(self):
        events = AuditEvent.objects.visible_to(self.request.user).select_related("project")
        token = self.request.auth
        if getattr(token, "project_id", None):
            events = events.filter(project_id=token.project_id)
        events, errors = filter_events(events, self.request.query_params)
        if errors:
            raise exceptions.ValidationError(errors)
        return events


@extend_schema(responses={200: dict})
@api_view(["GET"])
def verify(request):
    """Re-compute the whole hash chain: `{"ok", "events", "first_bad"}` (first_bad is a sequence number)."""
    # Staff may always (even before any project exists); others need the audit of at least one project.
    if not (request.user.is_staff or projects_with_action(request.user, Action.VIEW_AUDIT).exists()):
        raise exceptions.PermissionDenied("Only staff and project admins/approvers may verify the audit chain.")
    return Response(verify_chain().as_dict())
