"""Where data come from: ``--data-dir`` or the ``SLBJAX_DATA`` variable."""

from __future__ import annotations

import os
from pathlib import Path

from slbjax.errors import DataError

ENV_VAR = "SLBJAX_DATA"


def resolve_data_dir(cli_value: str | Path | None) -> Path | None:
    """The data folder from the CLI, else ``$SLBJAX_DATA``, else None."""
    value = cli_value if cli_value not in (None, "") else os.environ.get(ENV_VAR) or None
    return Path(value).expanduser() if value is not None else None


def require_data_dir(data_dir: Path | None, what: str) -> Path:
    """Returns ``data_dir`` or raises a DataError telling how to supply it."""
    if data_dir is None:
        raise DataError(
            None,
            f"{what} needs the published data: pass --data-dir DIR or set {ENV_VAR} "
            "to a folder laid out like shared/data (imoe/..., pulse/...)",
        )
    if not data_dir.is_dir():
        raise DataError(data_dir, f"data folder does not exist (needed for {what})")
    return data_dir
