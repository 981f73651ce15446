"""The prediction log: its pages, its API details and its export, on records written through the real serving path."""

from __future__ import annotations

import io
import json
import time
import uuid
from html.parser import HTMLParser

import pandas as pd
import pyarrow.parquet as pq
import pytest

from apps.accounts.models import Membership
from apps.audit.models import AuditEvent
from apps.deployments import export, predlog, services
from apps.deployments.models import PredictionLog
from apps.registry.evidence import load_predictor
from tests.deployments.conftest import FEATURES, training_frame


def invoke(client, deployment, body: dict) -> str:
    response = client.post(f"/api/v1/deployments/{deployment.slug}/invocations", data=json.dumps(body),
                           content_type="application/json")
    return response["X-Request-ID"]


def split(frame: pd.DataFrame) -> dict:
    return {"dataframe_split": json.loads(frame.to_json(orient="split", index=False))}


def expected(version, frame) -> list:
    return load_predictor(version).get_raw_model().predict(frame).tolist()


@pytest.fixture
def deployment(people, project, version, sandbox):
    return services.deploy(project, actor=people["scientist"], name="Churn scoring", environment=sandbox,
                           version=version)


@pytest.fixture
def rows():
    return training_frame(rows=3, seed=21)[FEATURES]


@pytest.fixture
def logged(deployment, people, api_as, rows):
    """Four requests through the invocations endpoint, drained into the log: three rows, one row sent as a bare
    list (no column names), one refused for a missing column, one more row."""
    client = api_as(people["scientist"])
    ids = {"three": invoke(client, deployment, split(rows))}
    time.sleep(0.01)
    ids["positional"] = invoke(client, deployment, {"instances": json.loads(rows.head(1).to_json(orient="values"))})
    time.sleep(0.01)
    ids["refused"] = invoke(client, deployment, {"dataframe_records": [{"age": 30, "income": 1.0}]})
    time.sleep(0.01)
    ids["one"] = invoke(client, deployment, split(rows.head(1)))
    assert predlog.drain() == 4
    return ids


class _Table(HTMLParser):
    def __init__(self, table_id: str):
        super().__init__()
        self.table_id, self.inside, self.rows, self.cell = table_id, False, [], None

    def handle_starttag(self, tag, attrs):
        if tag == "table" and dict(attrs).get("id") == self.table_id:
            self.inside = True
        elif self.inside and tag == "tr":
            self.rows.append([])
        elif self.inside and tag in ("td", "th"):
            self.cell = ""

    def handle_endtag(self, tag):
        if tag == "table":
            self.inside = False
        elif self.inside and tag in ("td", "th") and self.cell is not None:
            self.rows[-1].append(self.cell.strip())
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


def html_table(html: str, table_id: str) -> pd.DataFrame:
    """A table of a page as a DataFrame of numbers where they are numbers (the header row names the columns)."""
    parser = _Table(table_id)
    parser.feed(html)
    header, *body = parser.rows
    return pd.read_csv(io.StringIO(pd.DataFrame(body, columns=header).to_csv(index=False)))


def page_url(deployment, suffix: str = "") -> str:
    return f"/deployments/{deployment.slug}/predictions/{suffix}"


def api_url(deployment, suffix: str = "") -> str:
    return f"/api/v1/deployments/{deployment.slug}/predictions/{suffix}"


# --- The log page ------------------------------------------------------------------------------------------------


def test_log_page_lists_requests_newest_first_with_their_predictions(deployment, logged, people, client_as):
    response = client_as(people["scientist"]).get(page_url(deployment))
    assert response.status_code == 200
    html = response.content.decode()
    order = [html.index(str(PredictionLog.objects.get(request_id=logged[k]).record_id))
             for k in ("one", "refused", "positional", "three")]
    assert order == sorted(order)
    assert "Column “tenure” is missing" in html
    assert "hidden for your role" not in html
    assert 'id="export-csv"' not in html  # scientists do not export


def test_admin_sees_export_buttons_carrying_the_filters(deployment, logged, people, client_as):
    html = client_as(people["admin"]).get(page_url(deployment), {"status": "ok"}).content.decode()
    assert f"/deployments/{deployment.slug}/predictions/export/?format=csv&amp;status=ok" in html
    assert "format=parquet&amp;status=ok" in html


def test_filters_select_records(deployment, logged, people, client_as):
    client = client_as(people["scientist"])
    html = client.get(page_url(deployment), {"status": "error"}).content.decode()
    assert logged["refused"][:12] in html and logged["three"][:12] not in html
    html = client.get(page_url(deployment), {"request_id": logged["three"]}).content.decode()
    assert html.count("data-record=") == 1
    html = client.get(page_url(deployment), {"role": "shadow"}).content.decode()
    assert "No predictions match these filters." in html
    html = client.get(page_url(deployment), {"version": "1", "status": "400"}).content.decode()
    assert html.count("data-record=") == 1


def test_a_bad_filter_is_a_form_error_not_a_500(deployment, logged, people, client_as):
    response = client_as(people["scientist"]).get(page_url(deployment), {"status": "sometimes", "from": "yesterday"})
    assert response.status_code == 400
    html = response.content.decode()
    assert "Use ok, error or an HTTP status code." in html
    assert "Use a date (YYYY-MM-DD) or an ISO 8601 time." in html
    assert 'aria-invalid="true"' in html and "data-record=" not in html


def test_empty_log_explains_the_drain_and_counts_the_buffer(deployment, people, api_as, client_as, rows, settings):
    settings.PORTAL_PREDICTION_DRAIN_SECONDS = 7
    html = client_as(people["viewer"]).get(page_url(deployment)).content.decode()
    assert "No predictions logged yet." in html and "every 7 seconds" in html
    assert "PORTAL_PREDICTION_DRAIN_SECONDS" in html
    invoke(api_as(people["viewer"]), deployment, split(rows))
    html = client_as(people["viewer"]).get(page_url(deployment)).content.decode()
    assert 'id="pending-count">1<' in html


def test_log_page_paginates_in_a_constant_number_of_queries(deployment, version, people, client_as,
                                                           django_assert_max_num_queries):
    def add(count):
        predlog.insert([predlog.new_record(request_id=uuid.uuid4().hex, deployment_id=deployment.pk,
                                           version_id=version.pk, latency_ms=2.0, status=200, row_count=1,
                                           inputs={"columns": FEATURES, "data": [[30, 1.0, 2]]}, outputs=[1])
                        for _ in range(count)])

    client = client_as(people["scientist"])
    add(5)
    client.get(page_url(deployment))  # warm the session and caches
    with django_assert_max_num_queries(14) as few:
        client.get(page_url(deployment))
    add(60)
    with django_assert_max_num_queries(len(few.captured_queries)):
        response = client.get(page_url(deployment))
    assert response.content.decode().count("data-record=") == 50
    last = client.get(page_url(deployment), {"page": 2}).content.decode()
    assert last.count("data-record=") == 15 and "Page 2 of 2 (65 in all)" in last


def test_the_log_page_leaves_the_logged_inputs_in_the_database(deployment, logged, people, client_as):
    """A page of 50 records would otherwise decode up to 50 requests' rows to show none of them; and a viewer's
    page does not even read the predictions it may not see. Nor does any page read the model versions' JSON
    (signature, input example) for the version's name and number."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def columns_read(user) -> str:
        client = client_as(user)
        with CaptureQueriesContext(connection) as queries:
            page = client.get(page_url(deployment))
        assert page.status_code == 200 and "data-record=" in page.content.decode()
        table = PredictionLog._meta.db_table
        return " ".join(q["sql"] for q in queries.captured_queries if f'FROM "{table}"' in q["sql"])

    admin_sql, viewer_sql = columns_read(people["admin"]), columns_read(people["viewer"])
    assert '"inputs"' not in admin_sql and '"outputs"' in admin_sql
    assert '"inputs"' not in viewer_sql and '"outputs"' not in viewer_sql
    assert '"signature"' not in admin_sql + viewer_sql and '"input_example"' not in admin_sql + viewer_sql


# --- One record --------------------------------------------------------------------------------------------------


def test_detail_page_shows_the_rows_numbered_from_zero_with_their_predictions(deployment, version, logged, people,
                                                                              client_as, rows):
    record = PredictionLog.objects.get(request_id=logged["three"])
    html = client_as(people["approver"]).get(page_url(deployment, f"{record.record_id}/")).content.decode()
    assert record.request_id in html and "scientist" in html and "Churn v1" in html
    table = html_table(html, "inputs-table")
    assert list(table.columns) == ["Row", *FEATURES, "Prediction"]
    assert table["Row"].tolist() == [0, 1, 2]
    assert table["age"].tolist() == rows["age"].tolist()
    assert table["Prediction"].tolist() == expected(version, rows)


def test_rows_sent_without_column_names_are_shown_under_the_signatures_names(deployment, logged, people, client_as):
    record = PredictionLog.objects.get(request_id=logged["positional"])
    html = client_as(people["scientist"]).get(page_url(deployment, f"{record.record_id}/")).content.decode()
    table = html_table(html, "inputs-table")
    assert list(table.columns) == ["Row", *FEATURES, "Prediction"]


def test_detail_links_the_shadow_record_of_the_same_request(deployment, version2, people, api_as, client_as, rows):
    services.set_challenger(deployment, version2, actor=people["scientist"], mode="shadow")
    request_id = invoke(api_as(people["scientist"]), deployment, split(rows))
    deadline = time.monotonic() + 20
    while PredictionLog.objects.filter(request_id=request_id).count() < 2 and time.monotonic() < deadline:
        predlog.drain()
        time.sleep(0.05)
    champion = PredictionLog.objects.get(request_id=request_id, role="champion")
    shadow = PredictionLog.objects.get(request_id=request_id, role="shadow")
    html = client_as(people["scientist"]).get(page_url(deployment, f"{champion.record_id}/")).content.decode()
    assert f"/deployments/{deployment.slug}/predictions/{shadow.record_id}/" in html
    data = api_as(people["scientist"]).get(api_url(deployment, f"{champion.record_id}/")).json()
    assert [r["id"] for r in data["related"]] == [str(shadow.record_id)]
    assert data["related"][0]["model_version"]["number"] == 2


def test_viewer_sees_when_and_how_but_never_inputs_or_predictions(deployment, logged, people, client_as, api_as,
                                                                  rows):
    record = PredictionLog.objects.get(request_id=logged["three"])
    refused = PredictionLog.objects.get(request_id=logged["refused"])
    client = client_as(people["viewer"])
    html = client.get(page_url(deployment)).content.decode()
    assert "hidden for your role" in html and "missing" not in html
    assert "Predictions</th>" not in html
    for item in (record, refused):
        html = client.get(page_url(deployment, f"{item.record_id}/")).content.decode()
        assert "hidden for your role" in html and 'id="inputs-table"' not in html
        assert "missing" not in html and str(rows["income"].iloc[0]) not in html
    api = api_as(people["viewer"])
    listed = api.get(api_url(deployment)).json()["results"]
    assert len(listed) == 4
    assert all(r["data_hidden"] and r["inputs"] is None and r["outputs"] is None and r["error"] is None
               for r in listed)
    detail = api.get(api_url(deployment, f"{record.record_id}/")).json()
    assert detail["inputs"] is None and detail["row_count"] == 3 and detail["caller"].startswith("scientist")
    shown = api_as(people["scientist"]).get(api_url(deployment, f"{record.record_id}/")).json()
    assert shown["inputs"]["columns"] == FEATURES and len(shown["outputs"]) == 3 and not shown["data_hidden"]


def test_api_list_filters_and_names_a_bad_filter(deployment, logged, people, api_as):
    api = api_as(people["scientist"])
    results = api.get(api_url(deployment), {"status": "error"}).json()["results"]
    assert [r["request_id"] for r in results] == [logged["refused"]]
    assert results[0]["url"].endswith(f"/predictions/{results[0]['id']}/")
    response = api.get(api_url(deployment), {"role": "boss"})
    assert response.status_code == 400 and "role" in response.json()["errors"]


def test_outsiders_get_404_everywhere(deployment, logged, people, client_as, api_as, other_project):
    record = PredictionLog.objects.get(request_id=logged["three"])
    client, api = client_as(people["outsider"]), api_as(people["outsider"])
    for path in (page_url(deployment), page_url(deployment, f"{record.record_id}/"),
                 page_url(deployment, "export/?format=csv")):
        assert client.get(path).status_code == 404, path
    for path in (api_url(deployment), api_url(deployment, f"{record.record_id}/"),
                 api_url(deployment, "export/?format=csv")):
        assert api.get(path).status_code == 404, path
    # A token scoped to another project reaches nothing of this one, even for this project's admin.
    Membership.objects.create(user=people["admin"], project=other_project, role="viewer")
    admin = type(people["admin"]).objects.get(pk=people["admin"].pk)  # not the instance with its roles cached
    scoped = api_as(admin, project=other_project)
    assert scoped.get(api_url(deployment, f"{record.record_id}/")).status_code == 404


def test_unknown_record_is_404(deployment, logged, people, client_as):
    assert client_as(people["admin"]).get(page_url(deployment, f"{uuid.uuid4()}/")).status_code == 404


# --- Export ------------------------------------------------------------------------------------------------------


def _lines(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def test_csv_export_has_one_line_per_scored_row_and_is_audited(deployment, version, logged, people, api_as, rows):
    response = api_as(people["admin"]).get(api_url(deployment, "export/"), {"format": "csv"})
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"].startswith("text/csv")
    assert f'filename="{deployment.slug}-predictions-' in response["Content-Disposition"]
    frame = pd.read_csv(io.BytesIO(_lines(response)))
    assert list(frame.columns) == [*export.META, *FEATURES, "prediction", "error"]
    assert len(frame) == 3 + 1 + 1 + 1
    three = frame[frame.request_id == logged["three"]]
    assert three["row"].tolist() == [0, 1, 2]
    assert three["prediction"].tolist() == expected(version, rows)
    assert three["age"].tolist() == rows["age"].tolist()
    assert set(three["model_version"]) == {1} and set(three["deployment"]) == {deployment.slug}
    assert pd.Timestamp(three["created_at"].iloc[0]).tzinfo is not None
    positional = frame[frame.request_id == logged["positional"]].iloc[0]
    assert positional["tenure"] == rows["tenure"].iloc[0]
    refused = frame[frame.request_id == logged["refused"]].iloc[0]
    # A refused request's line carries what was sent, with no prediction.
    assert refused["row"] == 0 and refused["age"] == 30 and pd.isna(refused["prediction"])
    assert refused["status_code"] == 400 and "missing" in refused["error"]
    assert frame["created_at"].is_monotonic_increasing
    event = AuditEvent.objects.get(action="deployment.predictions_export")
    assert event.actor == people["admin"] and event.project == deployment.project
    assert event.details == {"deployment": deployment.slug, "format": "csv", "filters": {}, "rows": 6}


def test_csv_export_applies_the_filters(deployment, logged, people, client_as):
    response = client_as(people["admin"]).get(page_url(deployment, "export/"), {"format": "csv", "status": "ok",
                                                                               "page": "2"})
    frame = pd.read_csv(io.BytesIO(_lines(response)))
    assert len(frame) == 5 and set(frame["status_code"]) == {200}
    event = AuditEvent.objects.get(action="deployment.predictions_export")
    assert event.details["filters"] == {"status": "ok"} and event.details["rows"] == 5


def test_parquet_export_reads_back_with_types(deployment, version, logged, people, api_as, client_as, rows):
    response = api_as(people["admin"]).get(api_url(deployment, "export/"), {"format": "parquet", "status": "ok"})
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment;")
    table = pq.read_table(io.BytesIO(_lines(response)))
    assert table.schema.field("created_at").type.tz == "UTC"
    assert str(table.schema.field("age").type) == "int64"
    frame = table.to_pandas()
    assert len(frame) == 5
    three = frame[frame.request_id == logged["three"]]
    assert three["prediction"].tolist() == expected(version, rows)
    assert three["income"].tolist() == rows["income"].tolist()
    page = client_as(people["admin"]).get(page_url(deployment, "export/"), {"format": "parquet"})
    assert pq.read_table(io.BytesIO(_lines(page))).num_rows == 6
    events = AuditEvent.objects.filter(action="deployment.predictions_export").order_by("sequence")
    assert [(e.details["format"], e.details["rows"]) for e in events] == [("parquet", 5), ("parquet", 6)]


def test_parquet_export_unifies_types_across_row_groups_and_writes_objects_as_json(deployment, version, people,
                                                                                   monkeypatch):
    monkeypatch.setattr(export, "PARQUET_ROWS", 2)
    outputs = [[1], [2], [0.5], [{"label": "yes", "score": 0.9}]]
    predlog.insert([
        {**predlog.new_record(request_id=f"req-{i}", deployment_id=deployment.pk, version_id=version.pk,
                              latency_ms=1.0, status=200, row_count=1,
                              inputs={"columns": FEATURES, "data": [[30, 1.5, 2]]}, outputs=out),
         "t": 1_700_000_000 + i}
        for i, out in enumerate(outputs)])
    plan = export.plan(deployment, deployment.predictions.all())
    assert plan.row_count == 4
    path = export.Path(export.tempfile.mkdtemp()) / "out.parquet"
    assert export.write_parquet(plan, path) == 4
    table = pq.read_table(path)
    assert str(table.schema.field("prediction").type) == "string"
    assert table.column("prediction").to_pylist() == ["1", "2", "0.5", '{"label":"yes","score":0.9}']
    csv = b"".join(c.encode() for c in export.csv_chunks(export.plan(deployment, deployment.predictions.all())))
    assert pd.read_csv(io.BytesIO(csv))["prediction"].tolist()[-1] == '{"label":"yes","score":0.9}'


def test_export_is_for_admins_only(deployment, logged, people, api_as, client_as):
    for role in ("scientist", "approver", "viewer"):
        response = api_as(people[role]).get(api_url(deployment, "export/"), {"format": "csv"})
        assert response.status_code == 403, role
        assert "admins" in response.json()["detail"]
        assert client_as(people[role]).get(page_url(deployment, "export/"), {"format": "csv"}).status_code == 403
    assert not AuditEvent.objects.filter(action="deployment.predictions_export").exists()


def test_export_refuses_an_unknown_format_or_a_bad_filter(deployment, logged, people, api_as, client_as):
    api = api_as(people["admin"])
    response = api.get(api_url(deployment, "export/"), {"format": "xlsx"})
    assert response.status_code == 400 and "format" in response.json()["errors"]
    response = api.get(api_url(deployment, "export/"), {"format": "csv", "to": "soon"})
    assert response.status_code == 400 and "to" in response.json()["errors"]
    response = client_as(people["admin"]).get(page_url(deployment, "export/"), {"format": "csv", "version": "x"})
    assert response.status_code == 400 and b"version" in response.content
    assert not AuditEvent.objects.filter(action="deployment.predictions_export").exists()
