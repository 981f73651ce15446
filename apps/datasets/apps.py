from django.apps import AppConfig


class DatasetsConfig(AppConfig):
    name = "apps.datasets"
    label = "datasets"
    verbose_name = "Datasets"

    def ready(self) -> None:
        from apps.core.models import JOB_KIND_LABELS

        JOB_KIND_LABELS.update({"profile_dataset": "Dataset profiling", "anonymise_dataset": "Anonymisation"})
