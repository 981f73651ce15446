"""The sections of the audit packet: a registry later apps add to, so approvals never imports them.

An app to the right of approvals (deployments, monitoring) contributes its part in its own
`AppConfig.ready()`:

    from apps.approvals.packet import register_section, when

    def deployment_history(version, user) -> dict | None:
        ...
        return {"intro": "Where this version ran, and when.",
                "tables": [{"caption": "Deployments", "columns": ["Environment", "From", "Until"],
                            "rows": [[d.environment.name, when(d.started_at), when(d.ended_at)] for d in rows]}]}

    register_section("deployments", "Deployment history", 50, deployment_history)

`build(version, user)` returns what the section's template renders, or None when it has nothing to say
(the section is then left out). Without a `template`, `approvals/packet_section.html` renders the
generic shape: `intro` (text), `facts` ([label, value] pairs), `tables` ([{caption, columns, rows}]) and
`notes` (texts). Values are escaped; a `When` (see `when()`) prints the date in words and in ISO 8601.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from django.utils import dateformat, timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

GENERIC_TEMPLATE = "approvals/packet_section.html"

# Orders of the built-in sections, and where the right-hand apps are expected to slot in.
ORDER_CARD, ORDER_LINEAGE, ORDER_VALIDATION, ORDER_APPROVALS = 10, 20, 30, 40
ORDER_DEPLOYMENTS, ORDER_MONITORING, ORDER_AUDIT = 50, 60, 90


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    order: int
    build: Callable[..., dict | None]
    template: str = GENERIC_TEMPLATE


_SECTIONS: dict[str, Section] = {}


def register_section(key: str, title: str, order: int, build: Callable[..., dict | None], *,
                     template: str | None = None) -> Section:
    """Add (or replace, e.g. on a repeated `ready()`) the section called `key`."""
    if not key or not key.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"A section key is letters, digits, - and _ only, not {key!r}.")
    if not callable(build):
        raise TypeError("build must be a callable (version, user) -> dict | None.")
    section = Section(key=key, title=title, order=int(order), build=build, template=template or GENERIC_TEMPLATE)
    _SECTIONS[key] = section
    return section


def unregister_section(key: str) -> None:
    _SECTIONS.pop(key, None)


def registered_sections() -> list[Section]:
    """The sections in packet order (by `order`, then key)."""
    return sorted(_SECTIONS.values(), key=lambda s: (s.order, s.key))


class When(SafeString):
    """A moment written twice: in words for a reader ("Tuesday 3 March 2026, 14:05 UTC") and in ISO 8601.

    It is the HTML itself (a safe string), so `{{ value }}` renders it in any section template; `.text` is
    the same in plain text, `.plain`, `.iso` and `.moment` the parts.
    """

    def __new__(cls, moment: datetime):
        local = timezone.localtime(moment) if timezone.is_aware(moment) else moment
        plain, iso = dateformat.format(local, "l j F Y, H:i T"), local.isoformat(timespec="seconds")
        self = super().__new__(cls, format_html('<time datetime="{}">{}</time> <span class="iso">({})</span>',
                                                iso, plain, iso))
        self.moment, self.plain, self.iso = moment, plain, iso
        return self

    @property
    def text(self) -> str:
        return f"{self.plain} ({self.iso})"


def when(moment: datetime | None) -> When | None:
    return When(moment) if moment is not None else None
