from apps.registry.views import card, mlflow, models, wizard

urlpatterns = [*models.urlpatterns, *card.urlpatterns, *wizard.urlpatterns, *mlflow.urlpatterns]
