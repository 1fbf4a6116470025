"""The six real datasets: readers for the official layout, paradigm splits, image views.

``readers`` and ``splits`` need only numpy and are re-exported here; ``check`` backs
``python -m cap data check``. ``views`` and ``images`` need torch and torchvision: import them as
``cap.data.views`` / ``cap.data.images``.
"""

from cap.data.readers import (
    DATA_ROOT_ENV,
    DataError,
    DataRootError,
    DatasetFiles,
    DatasetFolderError,
    ImageList,
    SplitFileError,
    data_root,
    read_dataset,
)
from cap.data.splits import ParadigmSplit, make_split, ssl_shots, trzsl_split

__all__ = [
    "DATA_ROOT_ENV",
    "DataError",
    "DataRootError",
    "DatasetFiles",
    "DatasetFolderError",
    "ImageList",
    "ParadigmSplit",
    "SplitFileError",
    "data_root",
    "make_split",
    "read_dataset",
    "ssl_shots",
    "trzsl_split",
]
