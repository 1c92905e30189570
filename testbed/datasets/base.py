"""What a dataset is: its schema, where its files are and how they load, its synthetic
generator and the detector model its streams feed by default."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


@dataclass(frozen=True)
class Dataset:
    """One kind of stream data, named in a spec's `streams.per_node[i].data`.

    `synthesize(samples, rng)` returns a frame indexed by time with the `features` columns
    and a boolean `anomaly`; it stands in where the real files are absent. `file_prefix`,
    `locate` and `load` describe the real files (all None: synthetic only): `locate()` is
    the data directory or None, the files under it are `<file_prefix>*.csv[.gz]`, and
    `load(path)` is one file as a frame indexed by time with the `features` columns."""

    name: str
    columns: tuple[str, ...]
    features: tuple[str, ...]
    default_model: str
    synthesize: Callable[[int, np.random.Generator], pd.DataFrame]
    file_prefix: str | None = None
    locate: Callable[[], Path | None] | None = None
    load: Callable[[Path], pd.DataFrame] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        missing = [f for f in self.features if f not in self.columns]
        if not self.features or missing:
            raise ValueError(f"dataset '{self.name}': features {missing} are not columns")

    def files_in(self, root: Path | str) -> list[Path]:
        """This dataset's files under `root` (plain or gzipped), sorted."""
        if self.file_prefix is None:
            return []
        patterns = (f"{self.file_prefix}*.csv", f"{self.file_prefix}*.csv.gz")
        return sorted({p for pattern in patterns for p in Path(root).rglob(pattern)})

    def source(self) -> Path | None:
        """The file its streams replay: the first of its files in its data directory, loaded
        once here so that a damaged one stops a run before any cell starts. None where the
        data is absent (synthetic streams)."""
        if self.locate is None or self.load is None:
            return None
        root = self.locate()
        files = self.files_in(root) if root is not None else []
        if not files:
            return None
        self.load(files[0])
        return files[0].resolve()

    def matrix(self, frame: pd.DataFrame) -> np.ndarray:
        """The detector's input: the feature columns as float32, in a fixed order."""
        import numpy as np

        return frame[list(self.features)].to_numpy(np.float32)

    def samples(self, source: Path | None, count: int, seed: int = 0) -> np.ndarray:
        """`count` feature rows from `source`, or synthetic ones (seeded) without a file."""
        import numpy as np

        if source is not None and self.load is not None:
            return self.matrix(self.load(source))[:count]
        return self.matrix(self.synthesize(count, np.random.default_rng(seed)))
