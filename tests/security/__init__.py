"""Issue 9: the portal under attack: hostile input, access from every role, hardening of the deployment."""
