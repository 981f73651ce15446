"""Guidance pages: Help, the docs inside the portal, and dismissing or restarting the first-run tour."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from apps.guidance import checklists, docs, tour


def _back(request, default: str = "/") -> str:
    target = request.POST.get("next") or ""
    if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return target
    return default


@login_required
def help_page(request):
    role = tour.tour_role(request.user)
    return render(request, "guidance/help.html", {
        "role": role, "role_label": tour.Role(role).label, "checklists": checklists.for_role(role),
        "docs": docs.index(),
    })


@login_required
@require_POST
def tour_dismiss(request):
    tour.dismiss(request.user)
    return redirect(_back(request))


@login_required
@require_POST
def tour_restart(request):
    tour.restart(request.user)
    return redirect(_back(request, "/"))


@login_required
def doc(request, name: str):
    path = docs.doc_path(name)
    if path is None:
        raise Http404("No such document.")
    return render(request, "guidance/doc.html", {"doc": docs.render(path), "name": name, "docs": docs.index()})


@login_required
def doc_image(request, file_name: str):
    path = docs.image_path(file_name)
    if path is None:
        raise Http404("No such image.")
    kind = path.suffix.lstrip(".")
    response = FileResponse(path.open("rb"), content_type=docs.CONTENT_TYPES[kind])
    response["X-Content-Type-Options"] = "nosniff"
    if kind == "svg":  # an SVG opened on its own could run script: forbid everything but its own styles
        response["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; sandbox"
    return response
