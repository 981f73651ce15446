"""Templates ask the same policy as views: {% can "project.manage_members" project as may_manage %}."""

from django import template

from apps.accounts.permissions import can as policy_can

register = template.Library()


@register.simple_tag(takes_context=True)
def can(context, action, obj) -> bool:
    return policy_can(context["request"].user, action, obj)
