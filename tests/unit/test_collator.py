"""Training examples on real processor output: masking, EOS, language token, padding, caching,
and the device path (audio in the items, log-mel per batch) against the cache."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tests.train_fixtures import shared_tiny_home, write_clip  # noqa: F401 (fixture)
from voxtune.errors import UserError
from voxtune.models.load import load
from voxtune.train.collator import (
    IGNORE_INDEX,
    LogMel,
    TrainingCollator,
    TranscriptionDataset,
    cache_clips,
    encode_clip,
    features_key,
    read_audio,
    split_long_transcripts,
    transcript_ids,
)

pytestmark = pytest.mark.usefixtures("shared_tiny_home")

# (id, seconds, transcript, clip language)
CLIPS = [
    ("swedish", 1.0, "ett två tre", "sv"),
    ("unknown", 2.5, "four five six seven eight nine", None),
    ("english", 1.5, "ten", "en"),
]


@pytest.fixture
def tiny():
    return load("tiny-random")


@pytest.fixture
def tiny_short():
    return load("tiny-random-4s")


@pytest.fixture
def prepared(tmp_path: Path):
    clips = [write_clip(tmp_path / "prepared", clip_id, seconds, text, language, seed=i)
             for i, (clip_id, seconds, text, language) in enumerate(CLIPS)]
    return tmp_path / "prepared", clips


def dataset_and_batch(processor, prepared, cache: Path, language=None):
    folder, clips = prepared
    dataset = TranscriptionDataset(clips, folder, processor, cache, language=language)
    batch = TrainingCollator(processor.tokenizer.pad_token_id)(
        [dataset[i] for i in range(len(dataset))])
    return dataset, batch


def prompt_text(processor, input_ids: list[int]) -> str:
    return processor.tokenizer.decode(input_ids, skip_special_tokens=False)


def test_labels_mask_exactly_prompt_and_padding(tiny, prepared, tmp_path):
    _, processor = tiny
    dataset, batch = dataset_and_batch(processor, prepared, tmp_path / "cache")
    transcribe = processor.tokenizer.convert_tokens_to_ids("[TRANSCRIBE]")
    width = batch["input_ids"].shape[1]
    for row, (_, _, text, _) in enumerate(CLIPS):
        length = len(dataset.input_ids[row])
        prompt_length = dataset.input_ids[row].index(transcribe) + 1
        target = processor.tokenizer.encode(text, add_special_tokens=False)
        labels = batch["labels"][row]
        assert (labels[:prompt_length] == IGNORE_INDEX).all()
        assert labels[prompt_length:length].tolist() == [*target, processor.tokenizer.eos_token_id]
        assert (labels[length:] == IGNORE_INDEX).all()
        assert int((labels == IGNORE_INDEX).sum()) == prompt_length + (width - length)


def test_every_example_ends_with_eos(tiny, prepared, tmp_path):
    _, processor = tiny
    eos = processor.tokenizer.eos_token_id
    dataset, batch = dataset_and_batch(processor, prepared, tmp_path / "cache")
    for row in range(len(CLIPS)):
        length = int(batch["attention_mask"][row].sum())
        kept = batch["labels"][row][batch["labels"][row] != IGNORE_INDEX]
        assert kept[-1] == eos
        assert batch["input_ids"][row][length - 1] == eos
        assert dataset.input_ids[row][-1] == eos


def test_batches_are_right_padded(tiny, prepared, tmp_path):
    _, processor = tiny
    assert processor.tokenizer.padding_side == "left"  # the default this collator overrides
    dataset, batch = dataset_and_batch(processor, prepared, tmp_path / "cache")
    pad = processor.tokenizer.pad_token_id
    for row, input_ids in enumerate(dataset.input_ids):
        length = len(input_ids)
        assert batch["input_ids"][row][:length].tolist() == input_ids
        assert (batch["input_ids"][row][length:] == pad).all()
        assert batch["attention_mask"][row].tolist() == [1] * length + [0] * (
            batch["input_ids"].shape[1] - length)
    assert batch["input_ids"][:, 0].tolist() == [processor.tokenizer.bos_token_id] * len(CLIPS)


def test_padding_does_not_change_what_the_model_sees(tiny, prepared, tmp_path):
    """Each row's logits in a right-padded batch equal those of the clip alone."""
    model, processor = tiny
    dataset, batch = dataset_and_batch(processor, prepared, tmp_path / "cache")
    collator = TrainingCollator(processor.tokenizer.pad_token_id)
    with torch.no_grad():
        together = model(**batch).logits
        for row in range(len(dataset)):
            alone = model(**collator([dataset[row]])).logits[0]
            assert torch.allclose(together[row, :len(alone)], alone, atol=1e-4)


@pytest.mark.parametrize("clip_language, run_language, expected", [
    ("sv", None, "lang:sv"),
    ("sv", "de", "lang:sv"),
    (None, "de", "lang:de"),
    (None, None, None),
], ids=["clip", "clip-over-run", "run", "auto-detect"])
def test_language_token(tiny, tmp_path, clip_language, run_language, expected):
    _, processor = tiny
    clip = write_clip(tmp_path / "prepared", "clip", 1.0, "hello", clip_language)
    dataset = TranscriptionDataset([clip], tmp_path / "prepared", processor, tmp_path / "cache",
                                   language=run_language)
    prompt = prompt_text(processor, dataset.input_ids[0])
    head, _, _ = prompt.partition("[TRANSCRIBE]")
    if expected is None:
        assert "lang:" not in prompt
        assert head.endswith("[/INST]")
    else:
        assert head.endswith(f"[/INST]{expected}")


def test_features_are_computed_once_and_reused(tiny, prepared, tmp_path):
    _, processor = tiny
    calls = []
    request = processor.apply_transcription_request

    def counting_request(*args, **kwargs):
        calls.append(kwargs.get("language"))
        return request(*args, **kwargs)

    processor.apply_transcription_request = counting_request
    first, _ = dataset_and_batch(processor, prepared, tmp_path / "cache")
    assert calls == ["sv", None, "en"]
    written = {path: path.stat().st_mtime_ns for path in first.paths}

    second, _ = dataset_and_batch(processor, prepared, tmp_path / "cache")
    assert calls == ["sv", None, "en"]  # nothing recomputed
    assert {path: path.stat().st_mtime_ns for path in second.paths} == written
    assert second.input_ids == first.input_ids

    # what the cache holds is what the processor's own request makes of the clip
    folder, clips = prepared
    for index, clip in enumerate(clips):
        fresh = encode_clip(processor, read_audio(folder / clip.audio_path), clip.language)
        assert second[index]["input_features"].shape == fresh.input_features.shape
        assert torch.allclose(second[index]["input_features"], fresh.input_features, atol=1e-5)
        # a file holds its own clip's windows, not the batch's tensor it was sliced from
        assert first.paths[index].stat().st_size < 1.5 * fresh.input_features.nbytes


def test_cache_is_keyed_by_processor_and_language(tiny, tiny_short, prepared, tmp_path):
    (_, processor), (_, short) = tiny, tiny_short
    assert features_key(processor) == features_key(load("tiny-random")[1])
    assert features_key(processor) != features_key(short)
    folder, clips = prepared
    unlabelled = replace(clips[0], language=None)  # so the run's language decides
    paths = {cache_clips([unlabelled], folder, p, tmp_path / "cache", language)[0][0]
             for p in (processor, short) for language in ("sv", None)}
    assert len(paths) == 4


def test_input_features_one_row_per_window_in_batch_order(tiny_short, tmp_path):
    _, processor = tiny_short
    folder = tmp_path / "prepared"
    clips = [write_clip(folder, "short", 1.0, "a", "en", seed=1),
             write_clip(folder, "long", 6.0, "b", "en", seed=2),
             write_clip(folder, "tiny", 0.5, "c", "en", seed=3)]
    dataset = TranscriptionDataset(clips, folder, processor, tmp_path / "cache")
    batch = TrainingCollator(processor.tokenizer.pad_token_id)([dataset[i] for i in range(3)])
    assert batch["input_features"].shape == (4, 128, 400)
    assert torch.equal(batch["input_features"][0], dataset[0]["input_features"][0])
    assert torch.equal(batch["input_features"][1:3], dataset[1]["input_features"])
    assert torch.equal(batch["input_features"][3], dataset[2]["input_features"][0])


@pytest.mark.parametrize("cached", [True, False], ids=["cache", "device"])
def test_missing_prepared_audio_names_the_file(tiny, prepared, tmp_path, cached):
    _, processor = tiny
    folder, clips = prepared
    (folder / clips[0].audio_path).unlink()
    expected = rf"{clips[0].audio_path} \(clip swedish\).*voxtune prepare"
    with pytest.raises(UserError, match=expected):
        TranscriptionDataset(clips, folder, processor, tmp_path / "cache" if cached else None)


# --- the device path --------------------------------------------------------------------------

# (id, seconds, clip language): with a 4-s window, clips of 1, 2 and 3 windows, mixed in a batch
DEVICE_CLIPS = [("one", 1.0, "en"), ("three", 9.0, None), ("edge", 4.0, "sv"),
                ("two", 6.5, "en"), ("short", 0.3, None)]


@pytest.mark.parametrize("preset", ["tiny-random", "tiny-random-4s"])
def test_device_path_gives_the_model_the_same_inputs_as_the_cache(preset, tmp_path):
    model, processor = load(preset)
    folder = tmp_path / "prepared"
    clips = [write_clip(folder, clip_id, seconds, f"clip {clip_id}", language, seed=i)
             for i, (clip_id, seconds, language) in enumerate(DEVICE_CLIPS)]
    cached = TranscriptionDataset(clips, folder, processor, tmp_path / "cache", language="de")
    device = TranscriptionDataset(clips, folder, processor, None, language="de")
    assert "audio" in device[0] and "input_features" not in device[0]
    pad = processor.tokenizer.pad_token_id
    from_cache = TrainingCollator(pad)([cached[i] for i in range(len(clips))])
    on_device = TrainingCollator(pad, LogMel.of(processor))([device[i] for i in range(len(clips))])

    assert device.lengths == cached.lengths
    for name in ("input_ids", "attention_mask", "labels"):
        assert torch.equal(on_device[name], from_cache[name]), name
    assert on_device["input_features"].shape == from_cache["input_features"].shape
    assert torch.allclose(on_device["input_features"], from_cache["input_features"], atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(model(**on_device).loss, model(**from_cache).loss, atol=1e-5)


def test_device_path_writes_no_cache_and_needs_a_log_mel(tiny, prepared, tmp_path):
    _, processor = tiny
    folder, clips = prepared
    dataset = TranscriptionDataset(clips, folder, processor, None)
    assert not (tmp_path / "cache").exists() and dataset.paths == []
    with pytest.raises(ValueError, match="LogMel"):
        TrainingCollator(processor.tokenizer.pad_token_id)([dataset[0]])



@pytest.mark.parametrize(("slack", "kept"), [(0, ["short", "edge"]), (-1, ["short"])],
                         ids=["at-the-limit-kept", "one-over-skipped"])
def test_transcripts_over_the_token_limit_are_set_aside_with_their_count(
        tiny_short, tmp_path: Path, slack: int, kept: list[str]) -> None:
    _, processor = tiny_short
    texts = {"short": "ten", "edge": "four five six seven eight nine", "long": "word " * 5000}
    tokens = {clip_id: len(transcript_ids(processor, text)) for clip_id, text in texts.items()}
    clips = [write_clip(tmp_path, clip_id, 1.0, text, "en") for clip_id, text in texts.items()]
    within, too_long = split_long_transcripts(clips, processor, tokens["edge"] + slack)
    assert [clip.id for clip in within] == kept
    assert too_long == {clip_id: tokens[clip_id] for clip_id in texts if clip_id not in kept}
    assert tokens["long"] > 1000
