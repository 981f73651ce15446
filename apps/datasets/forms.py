"""Dataset forms: upload (new dataset or new version) and the per-column anonymisation plan."""

from __future__ import annotations

from django import forms


class UploadForm(forms.Form):
    file = forms.FileField(
        label="Data file",
        help_text="CSV, TSV, Parquet or Excel (.xlsx) with a header row. Drop it here or choose it.",
        widget=forms.ClearableFileInput(attrs={"accept": ".csv,.tsv,.txt,.parquet,.xlsx"}),
    )
    name = forms.CharField(
        max_length=120,
        label="Dataset name",
        help_text="A new name creates a dataset; an existing one gets a new version.",
    )
    description = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="What changed or where the data comes from (optional).",
    )

    def __init__(self, *args, fixed_name: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if fixed_name is not None:
            self.fields["name"].initial = fixed_name
            self.fields["name"].widget = forms.HiddenInput()
