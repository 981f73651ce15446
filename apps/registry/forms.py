"""Registry forms: the import wizard's file, describe and lineage steps, and a model's details.

The forms only shape and label the fields; the rules (owner is a member, commit is a hash, the dataset is
ready…) live in services.clean_model_fields / clean_lineage, which the views call so the API agrees.
"""

from __future__ import annotations

from django import forms

from apps.accounts.models import Project
from apps.datasets.models import DatasetVersion
from apps.registry.models import ModelVersion, RegisteredModel

UPLOAD_FORMATS = [f for f in ModelVersion.Format.choices if f[0] != ModelVersion.Format.MLFLOW_SERVER]


class FileForm(forms.Form):
    file = forms.FileField(
        label="Model file",
        required=False,
        help_text="An MLflow model (zip), a skops, ONNX, XGBoost (JSON/UBJ), LightGBM (text), pickle or joblib "
                  "file. Drop it here or choose it.",
        widget=forms.FileInput(attrs={"accept": ".zip,.skops,.onnx,.json,.ubj,.txt,.pkl,.pickle,.joblib,.jl"}),
    )
    format = forms.ChoiceField(
        label="Format",
        required=False,
        choices=[("", "Detect automatically"), *UPLOAD_FORMATS],
        help_text="Leave on “Detect automatically” unless you want the portal to check the file is this format.",
    )

    def __init__(self, *args, has_file: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.has_file = has_file
        if has_file:
            self.fields["file"].help_text = "Upload another file to replace the current one, or go on with it."

    def clean(self):
        cleaned = super().clean()
        if not cleaned.get("file") and not self.has_file:
            self.add_error("file", "Choose a model file to upload.")
        return cleaned


class ModelDetailsForm(forms.Form):
    """What a model is for and who answers for it: the wizard's describe step and the model's edit page."""

    description = forms.CharField(label="Description", required=False, widget=forms.Textarea(attrs={"rows": 3}),
                                  help_text="What the model predicts and how, in plain words.")
    intended_use = forms.CharField(label="Intended use", required=False, widget=forms.Textarea(attrs={"rows": 3}),
                                   help_text="Who should use its predictions, and for what decisions.")
    out_of_scope_uses = forms.CharField(label="Out-of-scope uses", required=False,
                                        widget=forms.Textarea(attrs={"rows": 3}),
                                        help_text="Uses it was not built or checked for.")
    owner = forms.ChoiceField(label="Owner", required=False, help_text="The project member who answers for it.")
    task_type = forms.ChoiceField(label="Task type", choices=RegisteredModel.TaskType.choices)
    risk_tier = forms.ChoiceField(label="Risk tier", choices=RegisteredModel.RiskTier.choices,
                                  initial=RegisteredModel.RiskTier.MEDIUM)

    def __init__(self, *args, project: Project, **kwargs):
        super().__init__(*args, **kwargs)
        self.project = project
        members = project.memberships.select_related("user").order_by("user__username")
        self.fields["owner"].choices = [("", "Nobody yet"), *(
            (m.user.username, m.user.get_full_name() or m.user.username) for m in members)]

    @staticmethod
    def initial_from_model(model: RegisteredModel) -> dict:
        return {
            "description": model.description, "intended_use": model.intended_use,
            "out_of_scope_uses": model.out_of_scope_uses, "owner": model.owner.username if model.owner else "",
            "task_type": model.task_type, "risk_tier": model.risk_tier,
        }


class DescribeForm(ModelDetailsForm):
    model = forms.ChoiceField(
        label="Model",
        required=False,
        help_text="Add a version to a model the project already has, or create a new model.",
    )
    name = forms.CharField(
        label="New model name",
        required=False,
        max_length=120,
        help_text="For a new model, e.g. “Loan default risk”.",
    )
    field_order = ["model", "name"]

    def __init__(self, *args, project: Project, refresh_url: str = "", **kwargs):
        super().__init__(*args, project=project, **kwargs)
        self.models = {m.slug: m for m in RegisteredModel.objects.filter(project=project)}
        self.fields["model"].choices = [("", "A new model"), *((s, m.name) for s, m in self.models.items())]
        if refresh_url:
            # Choosing an existing model loads its current description, so importing does not wipe it.
            self.fields["model"].widget.attrs.update({
                "hx-get": refresh_url, "hx-trigger": "change", "hx-target": "#describe-fields",
                "hx-select": "#describe-fields", "hx-swap": "outerHTML",
            })

    def clean(self):
        cleaned = super().clean()
        slug = cleaned.get("model")
        if slug:
            cleaned["name"] = self.models[slug].name
        elif not (cleaned.get("name") or "").strip():
            self.add_error("name", "Give the new model a name, or choose an existing model.")
        elif (cleaned["name"].strip()).lower() in {m.name.lower() for m in self.models.values()}:
            self.add_error("name", f"{self.project.name} already has a model with this name; choose it in "
                                   "“Model” to add a version to it.")
        return cleaned

    @staticmethod
    def initial_from_model(model: RegisteredModel) -> dict:
        return {"model": model.slug, "name": "", **ModelDetailsForm.initial_from_model(model)}


JSON_HELP = "A JSON object, e.g. {}. Optional."


class LineageForm(forms.Form):
    training_dataset = forms.ChoiceField(
        label="Training dataset version",
        required=False,
        help_text="The profiled dataset version the model was trained on. Its columns give the model's inputs.",
    )
    target_column = forms.ChoiceField(
        label="Target column",
        required=False,
        help_text="The column the model predicts; it is left out of the inputs.",
    )
    code_repository = forms.CharField(label="Code repository URL", required=False, max_length=500,
                                      help_text="e.g. https://git.example.org/team/churn")
    code_commit = forms.CharField(label="Commit hash", required=False, max_length=64,
                                  help_text="7 to 64 hexadecimal characters, e.g. 3f9c2ab")
    params = forms.CharField(label="Training parameters", required=False,
                             widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
                             help_text=JSON_HELP.format('{"max_depth": "5"}'))
    metrics = forms.CharField(label="Metrics", required=False,
                              widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
                              help_text=JSON_HELP.format('{"accuracy": 0.91}'))
    requirements = forms.CharField(label="Library versions", required=False,
                                   widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
                                   help_text="One per line, e.g. scikit-learn==1.5.2")
    input_example = forms.CharField(label="Input example", required=False,
                                    widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
                                    help_text='A few input rows as JSON, e.g. [{"age": 42, "income": 38000}]. '
                                              "Used for the signature when there is no training dataset. Optional.")

    def __init__(self, *args, project: Project, refresh_url: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self.versions = {
            str(v.uuid): v for v in DatasetVersion.objects.filter(
                dataset__project=project, status=DatasetVersion.Status.READY
            ).select_related("dataset").order_by("dataset__name", "-number")
        }
        self.fields["training_dataset"].choices = [("", "None"), *(
            (key, f"{v.dataset.name} v{v.number} ({v.row_count or 0} rows)") for key, v in self.versions.items())]
        chosen = self.versions.get(str(self["training_dataset"].value() or ""))
        columns = [c["name"] for c in chosen.schema] if chosen else []
        self.fields["target_column"].choices = [("", "None" if chosen else "Choose a training dataset first"),
                                                *((c, c) for c in columns)]
        if refresh_url:
            # The target column's choices follow the chosen dataset's schema.
            self.fields["training_dataset"].widget.attrs.update({
                "hx-get": refresh_url, "hx-trigger": "change", "hx-target": "#target-column-field",
                "hx-select": "#target-column-field", "hx-swap": "outerHTML",
            })
