from django.utils import timezone

from apps.deployments.models import PredictionLog
from tests.monitoring.conftest import log_predictions


def test_log_predictions_writes_requests(deployment):
    log_predictions(deployment, [{"age": 30, "income": 60000.0, "tenure": 3}] * 4, at=timezone.now(), per_request=2)
    assert PredictionLog.objects.filter(deployment=deployment).count() == 2
