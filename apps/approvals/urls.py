from apps.approvals import packet, views

urlpatterns = [*views.urlpatterns, *packet.urlpatterns]
