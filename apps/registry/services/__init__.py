"""Every change to the registry: models, imports (a job), metadata, archive/restore, trust. Atomic and audited.

One package, three modules: `metadata` (models and the describe/lineage fields), `imports` (the upload and
the import job), `versions` (what happens to a version after it is imported).
"""

from apps.registry.services.imports import (
    checked_format,
    create_version,
    import_version,
    start_import,
    store_upload,
    training_sample,
)
from apps.registry.services.metadata import (
    MODEL_FIELDS,
    VERSION_FIELDS,
    clean_lineage,
    clean_model_fields,
    create_model,
    get_or_create_model,
    update_model,
)
from apps.registry.services.versions import (
    archive_version,
    reexamine_version,
    restore_version,
    trust_version,
    update_version,
)

__all__ = [
    "MODEL_FIELDS",
    "VERSION_FIELDS",
    "archive_version",
    "checked_format",
    "clean_lineage",
    "clean_model_fields",
    "create_model",
    "create_version",
    "get_or_create_model",
    "import_version",
    "reexamine_version",
    "restore_version",
    "start_import",
    "store_upload",
    "training_sample",
    "trust_version",
    "update_model",
    "update_version",
]
