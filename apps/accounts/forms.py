"""Forms for sign-in, projects, members and tokens. They validate input; services do the work."""

from __future__ import annotations

from datetime import UTC, datetime, time

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import AuthenticationForm, PasswordResetForm
from django.core.validators import validate_email
from django.utils import timezone

from apps.accounts import services
from apps.accounts.models import Membership, Project


class LockoutAuthenticationForm(AuthenticationForm):
    error_messages = {
        **AuthenticationForm.error_messages,
        "invalid_login": "That username and password do not match. Check both and try again "
                         "(the password is case-sensitive).",
        "locked": "Too many failed sign-in attempts. Wait %(minutes)s minute(s) before trying again "
                  "(each further attempt restarts the wait).",
    }

    def clean(self):
        refusal = services.local_login_refusal()
        if refusal:  # PORTAL_LOCAL_LOGIN=off: no password is checked at all
            raise forms.ValidationError(refusal, code="local_login_off")
        username = self.cleaned_data.get("username")
        if username:
            wait = services.login_locked_for(username, self.request)
            if wait:
                services.record_failed_login(username, self.request)
                raise forms.ValidationError(self.error_messages["locked"], code="locked",
                                            params={"minutes": max(1, round(wait / 60))})
        return super().clean()

    def get_invalid_login_error(self):
        refused = getattr(self.request, "portal_login_refused", None)
        if refused:  # right password, but PORTAL_LOCAL_LOGIN=admins and this is not an administrator
            return forms.ValidationError(refused, code="local_login_restricted")
        return super().get_invalid_login_error()


class InvitationAwarePasswordResetForm(PasswordResetForm):
    """Django's reset form, but invited users who never chose a password can ask for a new link too."""

    def get_users(self, email):
        users = get_user_model()._default_manager.filter(email__iexact=email, is_active=True)
        return (u for u in users if u.email and u.email.lower() == email.lower())


class ProjectForm(forms.ModelForm):
    class Meta:
        model = Project
        fields = ["name", "slug", "description"]
        help_texts = {"slug": "Used in addresses and the API, e.g. <code>fraud-detection</code>. "
                              "Lowercase letters, digits and hyphens."}
        widgets = {"description": forms.Textarea(attrs={"rows": 3})}


class AddMemberForm(forms.Form):
    user = forms.CharField(
        label="Username or e-mail", max_length=254,
        help_text="An existing user's username or e-mail, or a new e-mail address to send an invitation to.",
    )
    role = forms.ChoiceField(choices=Membership.Role.choices, initial=Membership.Role.VIEWER)

    def __init__(self, *args, project: Project, **kwargs):
        super().__init__(*args, **kwargs)
        self.project = project
        self.existing_user = None

    def clean_user(self):
        value = self.cleaned_data["user"].strip()
        self.existing_user = services.find_user(value)
        if self.existing_user is None:
            try:
                validate_email(value)
            except forms.ValidationError:
                raise forms.ValidationError(
                    f"No user is called “{value}”. Check the spelling, or enter an e-mail address "
                    "to invite someone new."
                ) from None
        elif Membership.objects.filter(project=self.project, user=self.existing_user).exists():
            raise forms.ValidationError(f"{self.existing_user.username} is already a member.")
        return value


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Membership.Role.choices)


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What will use it, e.g. “nightly scoring script”.")
    project = forms.ModelChoiceField(
        queryset=Project.objects.none(), required=False, to_field_name="slug",
        empty_label="All my projects", help_text="Limit the token to one project (recommended).",
    )
    expires_at = forms.DateField(
        required=False, label="Expires on", widget=forms.DateInput(attrs={"type": "date"}),
        help_text="Leave empty for no expiry. The token stops working at the start of that day (UTC).",
    )

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["project"].queryset = Project.objects.filter(memberships__user=user)

    def clean_expires_at(self):
        day = self.cleaned_data.get("expires_at")
        if day is None:
            return None
        if day <= timezone.now().date():
            raise forms.ValidationError("Choose a date after today.")
        return datetime.combine(day, time.min, tzinfo=UTC)


class GroupMappingForm(forms.Form):
    # A plain form: whether the pair is taken is the service's to say (in words, and safe against a race).
    group = forms.CharField(
        label="Group name", max_length=200,
        help_text="Exactly as the identity provider sends it in the groups claim, "
                  "e.g. <code>ds-fraud-approvers</code>.")
    project = forms.ModelChoiceField(queryset=Project.objects.order_by("name"), to_field_name="slug",
                                     help_text="Members of the group get this role in this project.")
    role = forms.ChoiceField(choices=Membership.Role.choices)
