from django.apps import AppConfig


class DeploymentsConfig(AppConfig):
    name = "apps.deployments"
    label = "deployments"
    verbose_name = "Deployments"

    def ready(self) -> None:
        from apps.deployments import packet, receivers, services
        from apps.registry import compare

        receivers.connect()
        compare.deployed_in = services.deployed_in  # the comparison's "deployed in" column
        packet.register()  # the audit packet's "Deployments" section
