from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "apps.monitoring"
    label = "monitoring"
    verbose_name = "Monitoring"

    def ready(self) -> None:
        from apps.core.models import JOB_KIND_LABELS

        JOB_KIND_LABELS.update({"reference_profile": "Reference statistics", "retrain": "Retraining",
                                "rollup_rebuild": "Monitoring rebuild"})

        from apps.monitoring import receivers

        receivers.connect()

        from apps.monitoring import packet

        packet.register()  # the audit packet's "Monitoring" section
