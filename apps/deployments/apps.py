from django.apps import AppConfig


class DeploymentsConfig(AppConfig):
    name = "apps.deployments"
    label = "deployments"
    verbose_name = "Deployments"

    def ready(self) -> None:
        from apps.deployments import packet, receivers

        receivers.connect()
        packet.register()  # the audit packet's "Deployments" section
