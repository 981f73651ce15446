"""Role × dataset page/endpoint: 200/403/404 as the policy says (viewers explore, scientists change, admins
reveal and delete, outsiders see nothing)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db

PERSONAS = ["viewer", "scientist", "approver", "admin", "outsider", "staff"]

CASES = [
    ("dataset list", "get", "/projects/alpha/datasets/", {"*": 200, "outsider": 404}),
    ("upload", "post", "/projects/alpha/datasets/", {"*": 403, "scientist": 200, "admin": 200, "outsider": 404}),
    ("dataset page", "get", "/datasets/{d}/", {"*": 200, "outsider": 404}),
    ("version page", "get", "/datasets/{d}/v1/", {"*": 200, "outsider": 404}),
    ("rows", "get", "/datasets/{d}/v1/rows/", {"*": 200, "outsider": 404}),
    ("compare", "get", "/datasets/{d}/compare/", {"*": 200, "outsider": 404}),
    ("anonymise page", "get", "/datasets/{d}/v1/anonymise/", {"*": 403, "scientist": 200, "admin": 200,
                                                               "outsider": 404}),
    ("reveal", "post", "/datasets/{d}/v1/reveal/", {"*": 403, "admin": 302, "outsider": 404}),
    ("delete page", "get", "/datasets/{d}/delete/", {"*": 403, "admin": 200, "outsider": 404}),
    ("api list", "get", "/api/v1/datasets/", {"*": 200}),
    ("api dataset", "get", "/api/v1/datasets/{d}/", {"*": 200, "outsider": 404}),
    ("api versions", "get", "/api/v1/datasets/{d}/versions/", {"*": 200, "outsider": 404}),
    ("api version", "get", "/api/v1/datasets/{d}/versions/1/", {"*": 200, "outsider": 404}),
    ("api rows", "get", "/api/v1/datasets/{d}/versions/1/rows/", {"*": 200, "outsider": 404}),
    ("api compare", "get", "/api/v1/datasets/{d}/compare/?base=1&other=1", {"*": 200, "outsider": 404}),
    ("api anonymise", "post", "/api/v1/datasets/{d}/versions/1/anonymise/", {"*": 403, "scientist": 400,
                                                                              "admin": 400, "outsider": 404}),
    ("api delete", "delete", "/api/v1/datasets/{d}/", {"*": 403, "admin": 204, "outsider": 404}),
]


@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize(("name", "method", "path", "expected"), CASES, ids=[c[0] for c in CASES])
def test_dataset_permissions(persona, name, method, path, expected, people, profiled, client_as, api_as):
    url = path.format(d=profiled.dataset.uuid)
    if url.startswith("/api/"):
        client = api_as(people[persona])
        kwargs = {"data": {"plan": {"nope": {"method": "drop"}}}, "format": "json"} if method == "post" else {}
    else:
        client = client_as(people[persona])
        kwargs = {"data": {"column": "email", "reveal": "1"}} if method == "post" else {}
    response = getattr(client, method)(url, **kwargs)
    assert response.status_code == expected.get(persona, expected["*"]), f"{persona} {method.upper()} {url}"
