"""The model `voxtune serve` answers with: the fine-tuned weights and where base transcripts
come from.

Base transcripts never cost a second full copy where memory does not hold one: a LoRA adapter's
come from the same weights with the adapter disabled; for merged or fully tuned weights the base
is loaded beside them only when the device's free memory holds it (`--base auto`, the default;
`load` forces it, `skip` turns base transcripts off — /healthz says which and why). Both answer
under their own names (OpenAI's `model` field): the tuned one as the user named it, the base by
its Hub id or preset.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from voxtune.errors import UserError
from voxtune.models.inference import LoadedModel, TokenLimit, Transcript, transcribe_batch
from voxtune.models.load import load, load_tuned, published_limit

Target = Literal["tuned", "base"]
BaseChoice = Literal["auto", "load", "skip"]
BASE_CHOICES: tuple[BaseChoice, ...] = ("auto", "load", "skip")
# A second copy of the weights plus what generating one clip takes (KV cache, activations,
# allocator slack): measured ≈ 1.1× the weights for the tiny model, rounded up.
BASE_HEADROOM = 1.25
GIB = 2**30


def base_source(adapter: bool, weights_bytes: int, free_bytes: int | None,
                choice: BaseChoice) -> tuple[Literal["adapter", "load", "skip"], str]:
    """Where base transcripts come from, and why: the adapter disabled (no extra memory), the
    base loaded beside the tuned weights, or none. `free_bytes` None: unknown, so auto loads."""
    if adapter:
        return "adapter", "the tuned weights with the LoRA adapter disabled"
    if choice != "auto":
        return choice, f"--base {choice}"
    need = weights_bytes * BASE_HEADROOM
    if free_bytes is None or need <= free_bytes:
        return "load", "the base loaded beside the tuned weights"
    return "skip", (f"base transcripts are off: the base would need ≈{need / GIB:.1f} GiB and "
                    f"{free_bytes / GIB:.1f} GiB are free (serve an adapter, give the server "
                    "more memory, or force it with --base load)")


def free_memory_bytes(device: Any) -> int | None:
    """What the device can still hold: free GPU memory, or on the host the smaller of the
    kernel's MemAvailable and what the container's memory limit (cgroup v2) leaves."""
    import torch

    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    available: list[int] = []
    try:
        meminfo = Path("/proc/meminfo").read_text(encoding="utf-8")
        available += [int(line.split()[1]) * 1024 for line in meminfo.splitlines()
                      if line.startswith("MemAvailable:")]
        limit = Path("/sys/fs/cgroup/memory.max").read_text(encoding="utf-8").strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text(encoding="utf-8"))
            available.append(int(limit) - used)
    except (OSError, ValueError):
        pass
    return min(available) if available else None


def weights_bytes(model: Any) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


@dataclass
class Pair:
    """The fine-tuned model and where its base transcripts come from."""

    tuned: LoadedModel
    base: LoadedModel | None  # loaded beside the tuned weights (base_from "load")
    base_name: str
    max_new_tokens: TokenLimit  # the run's token limit: as the card's WER was measured
    base_from: Literal["adapter", "load", "skip"] = "adapter"
    base_note: str = ""  # why base transcripts come from where they do (or not at all)
    name: str = ""  # what clients call the tuned model (`--served-model-name`)

    @property
    def serves_base(self) -> bool:
        return self.base_from != "skip"

    @property
    def window_seconds(self) -> float:
        """The longest clip one transcription takes: the processor's audio window (30 s for
        every real Voxtral); longer clips would need long-form splitting."""
        extractor = self.tuned.processor.feature_extractor
        return extractor.n_samples / extractor.sampling_rate

    def names(self) -> dict[str, Target]:
        """Every model name a request may ask for."""
        names: dict[str, Target] = {self.name: "tuned"}
        if self.serves_base and self.base_name:
            names.setdefault(self.base_name, "base")
        return names

    def transcribe_batch(self, target: Target, audios: list[Any],
                         languages: list[str | None]) -> list[Transcript]:
        """Greedy transcripts of several clips by the tuned model or its base, in order."""
        loaded, scope = self.tuned, nullcontext()
        if target == "base":
            if self.base_from == "adapter":
                scope = self.tuned.model.disable_adapter()
            elif self.base is not None:
                loaded = self.base
            else:
                raise ValueError(f"no base transcripts: {self.base_note}")
        with scope:
            return transcribe_batch(loaded.model, loaded.processor, audios, languages,
                                    max_new_tokens=self.max_new_tokens)

    def health(self) -> dict[str, str]:
        return {"model": self.name, "description": self.tuned.description,
                "base_model": self.base_name, "base": self.base_from, "base_note": self.base_note}


def load_pair(source: str, base: BaseChoice = "auto", name: str = "") -> Pair:
    """The fine-tuned model (served as `name`), and where its base transcripts come from
    (`base_source`)."""
    tuned, spec = load_tuned(source)
    name = name or source
    max_new_tokens = published_limit(tuned.source, spec)
    if tuned.base is not None:
        where, note = base_source(True, 0, None, base)
        # clients name the base as the run did (a Hub id or preset), not by peft's path to it
        return Pair(tuned, None, spec.base_model if spec else tuned.base, max_new_tokens,
                    where, note, name)
    base_name = spec.base_model if spec else ""
    where, note = base_source(False, weights_bytes(tuned.model),
                              free_memory_bytes(tuned.model.device), base)
    if where == "skip":
        return Pair(tuned, None, base_name, max_new_tokens, where, note, name)
    if spec is None:
        raise UserError(f"{source}: a merged or fully tuned model without spec.yaml; the base "
                        "to compare with is unknown (serve it with --base skip)")
    model, processor = load(spec.base_model, tuned.model.dtype)
    loaded = LoadedModel(model.to(tuned.model.device), processor, spec.base_model, None)
    return Pair(tuned, loaded, spec.base_model, max_new_tokens, where, note, name)
