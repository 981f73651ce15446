"""What approvals tell apps to their right (deployments listens: a final approval may deploy)."""

from django.dispatch import Signal

#: Sent after the transaction that gave a request its final approval commits; kwargs: request.
approval_granted = Signal()
