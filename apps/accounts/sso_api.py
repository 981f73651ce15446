"""API for single sign-on group mappings (site staff): /api/v1/sso/group-mappings/. Thin over sso_services."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, viewsets
from rest_framework.response import Response

from apps.accounts import sso_services
from apps.accounts.api import call_service
from apps.accounts.models import GroupMapping, Membership, Project
from apps.accounts.permissions import SiteStaffPermission


class GroupMappingSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="uuid", read_only=True)
    group = serializers.CharField(max_length=200)
    project = serializers.SlugRelatedField(slug_field="slug", queryset=Project.objects.all(),
                                           error_messages={"does_not_exist": "No project has the slug “{value}”."})
    role = serializers.ChoiceField(choices=Membership.Role.choices)

    class Meta:
        model = GroupMapping
        fields = ["id", "group", "project", "role", "created_at"]
        read_only_fields = ["created_at"]
        validators = []  # uniqueness is the service's to say (in words, and race-safe)


class GroupMappingRoleSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=Membership.Role.choices)


class GroupMappingViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                          mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """Which identity-provider group gives which role in which project; applied at each SSO login.
    PATCH changes only the role (to move a group to another project, delete and create)."""

    serializer_class = GroupMappingSerializer
    permission_classes = [SiteStaffPermission]
    lookup_field = "uuid"
    queryset = GroupMapping.objects.select_related("project").order_by("group", "project__name")

    def perform_create(self, serializer):
        serializer.instance = call_service(sso_services.create_group_mapping, actor=self.request.user,
                                           denied="Only site staff can change group mappings.",
                                           **serializer.validated_data)

    @extend_schema(request=GroupMappingRoleSerializer, responses=GroupMappingSerializer)
    def partial_update(self, request, *args, **kwargs):
        mapping = self.get_object()
        body = GroupMappingRoleSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        mapping = call_service(sso_services.change_group_mapping, mapping, actor=request.user,
                               role=body.validated_data["role"], denied="Only site staff can change group mappings.")
        return Response(self.get_serializer(mapping).data)

    def perform_destroy(self, mapping):
        call_service(sso_services.delete_group_mapping, mapping, actor=self.request.user,
                     denied="Only site staff can change group mappings.")
