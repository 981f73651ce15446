from django.urls import path

from apps.datasets import views

urlpatterns = [
    path("projects/<slug:slug>/datasets/", views.dataset_list, name="dataset-list"),
    path("datasets/<uuid:dataset_id>/", views.dataset_detail, name="dataset-detail"),
    path("datasets/<uuid:dataset_id>/delete/", views.dataset_delete, name="dataset-delete"),
    path("datasets/<uuid:dataset_id>/v<int:number>/", views.version_detail, name="dataset-version"),
    path("datasets/<uuid:dataset_id>/v<int:number>/rows/", views.version_rows, name="dataset-rows"),
    path("datasets/<uuid:dataset_id>/v<int:number>/reveal/", views.version_reveal, name="dataset-reveal"),
]

urlpatterns += [
    path("datasets/<uuid:dataset_id>/compare/", views.dataset_compare, name="dataset-compare"),
    path("datasets/<uuid:dataset_id>/v<int:number>/anonymise/", views.version_anonymise, name="dataset-anonymise"),
]
