"""Remembers the client IP of the request being served so audit.record() can stamp it on events."""

from __future__ import annotations

from apps.audit.services import client_ip_var, request_client_ip


class AuditContextMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        token = client_ip_var.set(request_client_ip(request))
        try:
            return self.get_response(request)
        finally:
            client_ip_var.reset(token)
