"""The data sources a UI user may train on: their built dataset (refused when older than their
clips), and Hub / Granary sources whose local folders lie in their workspace or the shared-data
folder (checked when added and again at launch)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from voxtune.errors import UserError
from voxtune.spec import GranarySource, HubSource, PreparedSource, format_validation_error
from voxtune.ui.handlers import HUB_REPO, Context


def dataset_source(ctx: Context, user: str) -> PreparedSource:
    """The user's built dataset as a source the run's prepare step takes as it is (nothing is
    decoded twice); on Kubernetes relative to the shared volume. Refused when the clips have
    changed since it was built: a run trains on the clips the Dataset tab shows."""
    workspace = ctx.workspace(user)
    if not workspace.manifest.is_file():
        raise UserError("build the dataset first (Dataset tab → Build dataset)")
    if workspace.stale():
        raise UserError(f"your clips changed since the dataset was built (now "
                        f"{len(workspace.clips())} clips): rebuild it first (Dataset tab → "
                        "Build dataset), so the run trains on what you see")
    folder = workspace.dataset
    return PreparedSource(path=folder.relative_to(ctx.home) if ctx.kubernetes
                          else folder.resolve())


def _allowed_folder(ctx: Context, user: str, path: Path, what: str, other: str = "") -> Path:
    """`path` with symlinks resolved, if it lies in the user's workspace or the shared-data
    folder; the server can read every user's folders, so nothing else may be named."""
    resolved = path.resolve()
    roots = [ctx.workspace(user).root, ctx.settings.shared_data]
    if not any(root is not None and resolved.is_relative_to(root.resolve()) for root in roots):
        shared = f" or the shared data folder {ctx.settings.shared_data}" \
            if ctx.settings.shared_data else ""
        raise UserError(f"{what} {str(path)!r} is not a folder inside your workspace{shared}"
                        f"{other}")
    if not resolved.is_dir():
        raise UserError(f"{what} {str(path)!r}: no such folder")
    return resolved


def _hub_id_or_folder(ctx: Context, user: str, dataset: str, what: str) -> str:
    # A name that exists as a folder is read as that folder (datasets.load_dataset does the
    # same, relative to the working directory the steps inherit), even when it looks like org/name.
    if HUB_REPO.match(dataset) and not Path(dataset).exists():
        return dataset
    return str(_allowed_folder(ctx, user, Path(dataset), what, ", nor a Hub id (org/name)"))


def checked_source(ctx: Context, user: str,
                   source: HubSource | GranarySource) -> HubSource | GranarySource:
    """`source` with its local folders resolved, or a UserError for one the user may not read."""
    dataset = _hub_id_or_folder(ctx, user, source.dataset, "dataset")
    if isinstance(source, HubSource):
        return source.model_copy(update={"dataset": dataset})
    return source.model_copy(update={
        "dataset": dataset,
        "audio_root": _allowed_folder(ctx, user, source.audio_root, "Granary audio root")})


@dataclass(frozen=True)
class SourceForm:
    """The Dataset tab's "add a source" fields (which apply depends on `kind`)."""

    kind: str = "hub"  # or "granary"
    dataset: str = ""  # hub: a Hub id or a folder
    config: str = ""
    split: str = "train"
    text_column: str = "text"
    subset: str = ""  # granary: <lang>_<corpus>
    audio_root: str = ""
    max_samples: int = 1000  # 0: all

    def source(self) -> HubSource | GranarySource:
        """The source these fields describe; a UserError naming a field the spec refuses."""
        limit = int(self.max_samples or 0) or None
        try:
            if self.kind == "hub":
                return HubSource(dataset=self.dataset.strip(), config=self.config or None,
                                 split=self.split or "train",
                                 text_column=self.text_column or "text", max_samples=limit)
            return GranarySource(subset=self.subset.strip(),
                                 audio_root=Path(self.audio_root.strip()), max_samples=limit)
        except ValidationError as error:
            raise UserError(format_validation_error(error, f"{self.kind} source")) from None


def add_source(ctx: Context, user: str, source: HubSource | GranarySource) -> None:
    workspace = ctx.workspace(user)
    workspace.set_sources([*workspace.sources(), checked_source(ctx, user, source)])
