from django.apps import AppConfig


class GuidanceConfig(AppConfig):
    """Help for newcomers: first-run tours, the readiness checklist, the Help page and the user docs."""

    name = "apps.guidance"
    label = "guidance"
    verbose_name = "Guidance"
