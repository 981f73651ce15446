"""Forms of the approval pages; they only collect input: the rules are in services.py, which the views call."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from apps.accounts.models import Membership
from apps.approvals.models import DEFAULT_QUESTIONS, Decision, Environment
from apps.registry.models import ModelValidation, ModelVersion

YES_NO = [("yes", "Yes"), ("no", "No")]
YES_NO_PREFIX = "yes/no:"
OPTIONAL_SUFFIX = "(optional)"


def apply_service_errors(form: forms.Form, exc: ValidationError, *, field_map: dict[str, str] | None = None) -> None:
    """Show a service's ValidationError next to the fields it names, the rest above the form."""
    if not hasattr(exc, "error_dict"):
        form.add_error(None, exc.messages)
        return
    for key, errors in exc.message_dict.items():
        name = (field_map or {}).get(key, key)
        if name.startswith("answers."):
            name = f"q_{name.removeprefix('answers.')}"
        form.add_error(name if name in form.fields else None, errors)


class DecisionForm(forms.Form):
    verdict = forms.ChoiceField(choices=Decision.Verdict.choices, widget=forms.RadioSelect, label="Your decision")
    comment = forms.CharField(widget=forms.Textarea(attrs={"rows": 4}), required=False, max_length=5000,
                              help_text="Required to reject or request changes: say what is wrong and what to do.")

    def __init__(self, *args, reauth: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        if reauth:
            self.fields["password"] = forms.CharField(
                widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}), label="Your password",
                help_text="This environment asks approvers to sign off with their password.")


class RequestApprovalForm(forms.Form):
    environment = forms.ModelChoiceField(queryset=Environment.objects.none(), empty_label=None,
                                         label="Environment")
    justification = forms.CharField(widget=forms.Textarea(attrs={"rows": 4}), max_length=10_000,
                                    label="Justification",
                                    help_text="Why this version should run there: what it improves, what you checked.")
    validation = forms.ModelChoiceField(queryset=ModelValidation.objects.none(), required=False,
                                        label="Validation report", empty_label="No validation",
                                        help_text="A passed (or passed with warnings) validation of this version.")

    def __init__(self, *args, version: ModelVersion, **kwargs):
        super().__init__(*args, **kwargs)
        self.version = version
        environments = Environment.objects.filter(project_id=version.model.project_id, required_approvals__gt=0)
        self.fields["environment"].queryset = environments
        self.fields["validation"].queryset = version.validations.filter(
            verdict__in=[ModelValidation.Verdict.PASS, ModelValidation.Verdict.WARN]).select_related(
            "dataset_version__dataset")
        environment = self.chosen_environment()
        if environment is not None and not self.is_bound:
            self.initial["environment"] = environment.pk  # ?environment= may name it by slug
        for question in (environment.questionnaire if environment else DEFAULT_QUESTIONS):
            name = f"q_{question['key']}"
            if question["kind"] == "yes_no":
                self.fields[name] = forms.ChoiceField(choices=YES_NO, widget=forms.RadioSelect,
                                                      label=question["text"], required=question["required"])
            else:
                self.fields[name] = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), max_length=5000,
                                                    label=question["text"], required=question["required"])

    def chosen_environment(self) -> Environment | None:
        queryset = self.fields["environment"].queryset
        key = self.data.get("environment") if self.is_bound else self.initial.get("environment")
        if key:
            environment = queryset.filter(pk=key).first() if str(key).isdigit() else queryset.filter(
                slug=key).first()
            if environment:
                return environment
        return queryset.first()

    def question_fields(self):
        return [self[name] for name in self.fields if name.startswith("q_")]

    def answers(self) -> dict:
        return {name.removeprefix("q_"): value for name, value in self.cleaned_data.items()
                if name.startswith("q_") and value not in ("", None)}


class EnvironmentForm(forms.Form):
    name = forms.CharField(max_length=80, help_text="e.g. staging or production")
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False, max_length=2000)
    required_approvals = forms.IntegerField(min_value=0, max_value=10, initial=1, label="Approvals needed",
                                            help_text="0 means no sign-off: scientists deploy there directly.")
    approver_roles = forms.MultipleChoiceField(
        choices=[(Membership.Role.APPROVER, "Approvers"), (Membership.Role.ADMIN, "Project admins")],
        widget=forms.CheckboxSelectMultiple, initial=[Membership.Role.APPROVER, Membership.Role.ADMIN],
        label="Who may decide")
    high_risk_extra_approval = forms.BooleanField(required=False, label="High-risk models need one more approval")
    approval_valid_days = forms.IntegerField(min_value=1, max_value=3650, required=False,
                                             label="Approvals last (days)",
                                             help_text="Leave empty for approvals that do not expire.")
    request_expiry_days = forms.IntegerField(min_value=1, max_value=365, initial=30,
                                             label="Requests nobody decides expire after (days)")
    reauth_required = forms.BooleanField(required=False, label="Approvers re-enter their password to decide")
    auto_deploy = forms.BooleanField(required=False, label="Deploy automatically once approved")
    questions = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 6}), required=False, label="Risk questionnaire",
        help_text=f"One question per line. Start a line with “{YES_NO_PREFIX}” for a yes/no question; end it "
                  f"with “{OPTIONAL_SUFFIX}” when an answer is not required. Leave empty for the standard questions.")

    def __init__(self, *args, environment: Environment | None = None, **kwargs):
        if environment is not None and "initial" not in kwargs:
            kwargs["initial"] = {
                "name": environment.name, "description": environment.description,
                "required_approvals": environment.required_approvals,
                "approver_roles": environment.deciding_roles(),
                "high_risk_extra_approval": environment.high_risk_extra_approval,
                "approval_valid_days": environment.approval_valid_days,
                "request_expiry_days": environment.request_expiry_days,
                "reauth_required": environment.reauth_required, "auto_deploy": environment.auto_deploy,
                "questions": questions_to_text(environment.questions),
            }
        super().__init__(*args, **kwargs)
        if environment is not None:
            del self.fields["name"]  # the slug in URLs and the API follows the name: it stays

    def policy(self) -> dict:
        """The fields as services.create_environment/update_environment take them."""
        data = dict(self.cleaned_data)
        data.pop("name", None)
        data["questions"] = text_to_questions(data.get("questions") or "")
        return data


def questions_to_text(questions: list[dict]) -> str:
    lines = []
    for q in questions or []:
        line = (f"{YES_NO_PREFIX} " if q.get("kind") == "yes_no" else "") + q.get("text", "")
        lines.append(line + ("" if q.get("required", True) else f" {OPTIONAL_SUFFIX}"))
    return "\n".join(lines)


def text_to_questions(text: str) -> list[dict]:
    questions = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        kind = "text"
        if line.lower().startswith(YES_NO_PREFIX):
            kind, line = "yes_no", line[len(YES_NO_PREFIX):].strip()
        required = True
        if line.lower().endswith(OPTIONAL_SUFFIX):
            required, line = False, line[: -len(OPTIONAL_SUFFIX)].strip()
        questions.append({"text": line, "kind": kind, "required": required})
    return questions
