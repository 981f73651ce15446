"""Registry pages, one module per feature: models (lists, compare), card (a version's model card),
wizard (the import wizard) and mlflow (browse the MLflow tracking server)."""
