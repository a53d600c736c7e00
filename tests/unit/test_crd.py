"""The FineTuneRun CRD: structural, valid for the API server, in sync with the RunSpec model,
and the layering rule (controller modules never import torch & co.)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic import BaseModel, ValidationError

from tests.golden import check_golden
from voxtune.controller.crd import (
    Condition,
    FineTuneRunStatus,
    KubeStepStatus,
    custom_resource_definition,
    read_status,
    run_spec,
    spec_document,
)
from voxtune.spec import RunSpec, read_yaml

ROOT = Path(__file__).resolve().parents[2]
CRD = custom_resource_definition()
SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
# JSONSchemaProps keywords the API server accepts that we use; anything else is a bug.
ALLOWED = {"type", "description", "properties", "items", "additionalProperties", "required",
           "enum", "pattern", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
           "minItems", "maxItems", "minLength", "maxLength", "nullable", "format",
           "x-kubernetes-list-type", "x-kubernetes-list-map-keys"}


def test_crd_golden() -> None:
    check_golden("crd.yaml", yaml.safe_dump(CRD, sort_keys=False, allow_unicode=True,
                                            width=100))


@pytest.mark.parametrize("minor", ["1.29", "1.37"])
def test_crd_validates_strictly(minor: str) -> None:
    assert kubernetes_validate.validate(CRD, minor, strict=True) == minor


def walk(node: dict, path: str = "") -> typing.Iterator[tuple[str, dict]]:
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def test_schema_is_structural() -> None:
    """The rules the API server checks: a type everywhere, no references, no junctors with
    types, no `additionalProperties: false`, only known keywords, metadata only name."""
    for path, node in walk(SCHEMA):
        assert node.get("type") in ("object", "array", "string", "integer", "number",
                                    "boolean"), path
        assert set(node) <= ALLOWED, (path, set(node) - ALLOWED)
        assert not ("properties" in node and "additionalProperties" in node), path
        if node["type"] == "array":
            assert "items" in node, path
    assert set(SCHEMA["properties"]["metadata"]["properties"]) == {"name"}


def test_printer_columns_point_into_the_schema() -> None:
    columns = CRD["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [c["name"] for c in columns] == ["Phase", "Step", "Progress", "WER", "Message",
                                            "Age"]
    status = SCHEMA["properties"]["status"]["properties"]
    for column in columns[:5]:
        node: dict[str, Any] = {"properties": status}
        for part in column["jsonPath"].removeprefix(".status.").split("."):
            node = node.get("properties", {}).get(part) or node.get("additionalProperties", {})
        assert node.get("type") == column["type"], column


# --- in sync with the pydantic models -------------------------------------------------------

JSON_TYPES = {str: "string", Path: "string", int: "integer", float: "number", bool: "boolean"}


def expected_type(annotation: Any) -> tuple[str, list | None]:
    """(OpenAPI type, enum) of a field annotation, looking through Optional/Annotated."""
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return expected_type(get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        present = [a for a in get_args(annotation) if a is not type(None)]
        if len(present) == 1:
            return expected_type(present[0])
        return "object", None  # the discriminated union of sources
    if origin is Literal:
        return "string", list(get_args(annotation))
    if origin in (list, dict):
        return ("array" if origin is list else "object"), None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "object", None
    return JSON_TYPES[annotation], None


def models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models in an annotation (through list[…], Optional, Annotated, unions)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in get_args(annotation) for model in models_in(arg)]


def check_model(model: type[BaseModel], node: dict, path: str, skip: set[str],
                variant: bool = False) -> None:
    """Every field of `model` is in `node` with its type, enum, nullability and requiredness.
    A `variant` of the sources union shares one object schema with the other kinds: there,
    which fields a kind needs and the enums of one kind are checked by the model only."""
    properties = node["properties"]
    assert set(properties) >= set(model.model_fields) - skip, path
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        child, where = properties[name], f"{path}.{name}"
        kind, enum = expected_type(info.annotation)
        assert child["type"] == kind, where
        if enum is not None and not variant:
            assert child["enum"] == enum, where
        if type(None) in get_args(info.annotation):
            assert child.get("nullable") is True, where
        if info.is_required() and not variant:
            assert name in node.get("required", []), where
        item = child.get("items") or child.get("additionalProperties") or child
        inner = models_in(info.annotation)
        for sub in inner:
            check_model(sub, item, where, skip={"kind"} if len(inner) > 1 else set(),
                        variant=len(inner) > 1)


def test_spec_schema_has_every_runspec_field_with_its_type() -> None:
    check_model(RunSpec, SCHEMA["properties"]["spec"], "spec", skip={"name"})
    kinds = SCHEMA["properties"]["spec"]["properties"]["data"]["properties"]["sources"][
        "items"]["properties"]["kind"]["enum"]
    assert kinds == ["jsonl", "folder", "recordings", "prepared", "hub", "granary"]


def test_status_schema_has_every_status_field() -> None:
    status = SCHEMA["properties"]["status"]
    check_model(FineTuneRunStatus, status, "status", skip={"conditions", "steps"})
    check_model(KubeStepStatus, status["properties"]["steps"]["additionalProperties"],
                "status.steps", skip=set())
    assert set(status["properties"]["conditions"]["items"]["properties"]) == {
        (f.alias or n) for n, f in Condition.model_fields.items()}


def as_json_schema(node: Any) -> Any:
    """OpenAPI 3.0 → JSON Schema, strict like `kubectl apply` (unknown fields rejected)."""
    if not isinstance(node, dict):
        return node
    out = {k: as_json_schema(v) if k in ("items", "additionalProperties") else v
           for k, v in node.items() if k not in ("nullable", "exclusiveMinimum",
                                                  "exclusiveMaximum", "properties")}
    if "properties" in node:
        out["properties"] = {k: as_json_schema(v) for k, v in node["properties"].items()}
        out["additionalProperties"] = False
    for bound in ("Minimum", "Maximum"):
        if node.get(f"exclusive{bound}") is True:
            out[f"exclusive{bound}"] = out.pop(bound.lower())
    if node.get("nullable"):
        out["type"] = [node["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


SPEC_SCHEMA = as_json_schema(SCHEMA["properties"]["spec"])


def every_source_kind() -> RunSpec:
    return RunSpec(name="all", language="sv", data={"sources": [
        {"kind": "jsonl", "path": "a.jsonl"},
        {"kind": "folder", "path": "clips", "text_column": "sentence"},
        {"kind": "recordings", "path": "/data/recordings/me"},
        {"kind": "hub", "dataset": "org/ds", "config": "sv", "revision": "main",
         "max_samples": 10, "streaming": True},
        {"kind": "granary", "subset": "sv_voxpopuli", "split": "ast", "audio_root": "/data/vp"},
    ]}, training={"max_steps": 5})


def test_what_the_model_writes_the_schema_accepts() -> None:
    for spec in (RunSpec(name="defaults"), every_source_kind()):
        jsonschema.validate(spec_document(spec), SPEC_SCHEMA)
        assert run_spec({"metadata": {"name": spec.name}, "spec": spec_document(spec)}) == spec
    example = yaml.safe_load((ROOT / "jobs" / "finetunerun.yaml").read_text())
    jsonschema.validate(example["spec"], SPEC_SCHEMA)
    status = FineTuneRunStatus(name="r", conditions=[Condition(
        type="Complete", status="True", last_transition_time="2026-01-01T00:00:00Z")],
        steps={"train": KubeStepStatus(state="succeeded", disruptions=1)},
        metrics={"wer": 0.1})
    jsonschema.validate(status.document(), as_json_schema(SCHEMA["properties"]["status"]))


def with_change(path: str, value: Any) -> dict:
    document = spec_document(every_source_kind())
    *parents, last = path.split(".")
    node: Any = document
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    node[int(last) if last.isdigit() else last] = value
    return document


@pytest.mark.parametrize(("path", "value"), [
    ("mode", "dora"),
    ("language", "eng"),
    ("steps", []),
    ("steps.0", "evaluate"),
    ("data.eval_fraction", 0),
    ("data.max_duration", 31),
    ("training.learning_rate", 1),
    ("training.batch_size", 0),
    ("training.epochz", 3),
    ("data.sources.3.max_samples", 0),
    ("data.sources.3.kind", "s3"),
    ("data.sources.0", "jsonl:a.jsonl"),  # the CLI shorthand is not part of the resource
    ("resources.gpus", 17),
], ids=lambda v: str(v))
def test_schema_and_model_reject_the_same_mistakes(path: str, value: Any) -> None:
    document = with_change(path, value)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, SPEC_SCHEMA)
    if path != "data.sources.0":  # the model also takes the shorthand
        with pytest.raises(ValidationError):
            RunSpec.model_validate({**document, "name": "x"})


def test_run_name_rules_are_on_metadata() -> None:
    name = SCHEMA["properties"]["metadata"]["properties"]["name"]
    jsonschema.validate("my-voice", name)
    for bad in ("My-Voice", "a" * 41, "-x"):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, name)


def test_example_file_is_a_valid_finetunerun() -> None:
    example = ROOT / "jobs" / "finetunerun.yaml"
    document = yaml.safe_load(example.read_text())
    assert document["apiVersion"] == "voxtune.io/v1alpha1"
    assert run_spec(copy.deepcopy(document)) == RunSpec.model_validate(read_yaml(example))


@pytest.mark.parametrize(("spec", "problem"), [
    (None, "spec: missing: a FineTuneRun needs a spec (`spec: {}` for every default)"),
    ("lora", "spec: must be an object of RunSpec fields, not a string"),
    (["prepare"], "spec: must be an object of RunSpec fields, not a list"),
    (3, "spec: must be an object of RunSpec fields, not a number"),
], ids=["missing", "string", "list", "number"])
def test_a_spec_that_is_not_an_object_is_invalid(spec: Any, problem: str) -> None:
    run = {"metadata": {"name": "r"}, **({} if spec is None else {"spec": spec})}
    with pytest.raises(ValidationError) as caught:
        run_spec(run)
    (error,) = caught.value.errors()
    assert f"{'.'.join(error['loc'])}: {error['msg']}".startswith(problem)


def test_an_empty_spec_means_every_default() -> None:
    assert run_spec({"metadata": {"name": "r"}, "spec": {}}) == RunSpec(name="r")


GOOD_STEP = {"state": "succeeded", "exit_code": 0}


@pytest.mark.parametrize(("status", "kept", "dropped"), [
    (None, {}, []),
    ("Failed", {}, ["status"]),
    ([{"phase": "Failed"}], {}, ["status"]),
    ({"phase": "Exploded", "steps": {"prepare": GOOD_STEP}},
     {"steps": {"prepare": GOOD_STEP}}, ["status.phase"]),
    ({"phase": "Training", "steps": {"prepare": GOOD_STEP, "train": {"state": "paused"}}},
     {"phase": "Training", "steps": {"prepare": GOOD_STEP}}, ["status.steps.train.state"]),
    ({"steps": "all done", "metrics": {"wer": 0.1, "cer": "low"}},
     {"metrics": {"wer": 0.1}}, ["status.steps", "status.metrics.cer"]),
    ({"phase": "Succeeded", "conditions": [{"type": "Complete"}]}, {"phase": "Succeeded"},
     ["status.conditions.0.status", "status.conditions.0.lastTransitionTime"]),
], ids=["absent", "string", "list", "bad phase", "one bad step", "bad steps and metric",
        "bad condition"])
def test_unreadable_status_parts_are_dropped_and_the_rest_kept(
        status: Any, kept: dict, dropped: list[str]) -> None:
    run = {"metadata": {"name": "r"}, **({} if status is None else {"status": status})}
    read, problems = read_status(run)
    expected = FineTuneRunStatus.model_validate({"name": "r", **kept})
    assert read.model_dump(exclude={"updated"}) == expected.model_dump(exclude={"updated"})
    assert [problem.split(":")[0] for problem in problems] == dropped


# --- layering -------------------------------------------------------------------------------

HEAVY = ("torch", "transformers", "datasets", "gradio", "peft", "accelerate")
CONTROLLER_MODULES = ("voxtune.controller.crd", "voxtune.controller.jobs",
                      "voxtune.controller.reconcile", "voxtune.controller.operator",
                      "voxtune.executors.kubernetes", "voxtune.controller.kubeapi",
                      "voxtune.cli.runs", "voxtune.cli.cluster", "voxtune.executors.local",
                      "voxtune.run.harness", "voxtune.client")


def imported_after(modules: tuple[str, ...]) -> set[str]:
    code = (f"import sys\nfor m in {list(modules)!r}: __import__(m)\n"
            "import json; print(json.dumps(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    return set(json.loads(done.stdout))


def test_controller_never_imports_the_ml_stack() -> None:
    loaded = imported_after(CONTROLLER_MODULES)
    assert not {m.split(".")[0] for m in loaded} & set(HEAVY)


def test_step_wrapper_and_local_executor_need_no_kubernetes() -> None:
    """They run inside the step images, which do not install the kubernetes client."""
    loaded = imported_after(("voxtune.run.harness", "voxtune.executors.local"))
    assert not {m.split(".")[0] for m in loaded} & {"kubernetes", "urllib3", *HEAVY}
