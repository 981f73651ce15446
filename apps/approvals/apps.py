from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    name = "apps.approvals"
    label = "approvals"
    verbose_name = "Approvals"

    def ready(self) -> None:
        from apps.approvals.packet.sections import register_builtin_sections

        register_builtin_sections()  # later apps register their audit-packet sections in their own ready()
