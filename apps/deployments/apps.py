from django.apps import AppConfig


class DeploymentsConfig(AppConfig):
    name = "apps.deployments"
    label = "deployments"
    verbose_name = "Deployments"

    def ready(self) -> None:
        from apps.core.models import JOB_KIND_LABELS
        from apps.deployments import packet, receivers, services
        from apps.registry import compare

        JOB_KIND_LABELS.update({"batch_score": "Batch scoring"})

        receivers.connect()
        compare.deployed_in = services.deployed_in  # the comparison's "deployed in" column
        packet.register()  # the audit packet's "Deployments" section
