from django.apps import AppConfig


class RegistryConfig(AppConfig):
    name = "apps.registry"
    label = "registry"
    verbose_name = "Model registry"

    def ready(self) -> None:
        from apps.core.models import JOB_KIND_LABELS

        JOB_KIND_LABELS.update(
            {
                "import_model": "Model import",
                "explain_model": "Feature importance",
                "validate_model": "Model validation",
                "optimise_model": "ONNX optimisation check",
                "compare_baselines": "Comparison with simple baselines",
                "sync_mlflow": "MLflow sync",
            }
        )
