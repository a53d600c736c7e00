"""The FineTuneRun custom resource: its CRD, generated from the RunSpec model, and its status.

    voxtune render --crd > finetuneruns.crd.yaml      # the CRD (the chart ships the same file)
    kubectl apply -f jobs/finetunerun.yaml            # a run; `voxtune submit` is equivalent
    kubectl get ftr                                   # NAME PHASE STEP PROGRESS WER AGE
    kubectl annotate ftr my-voice voxtune.io/cancel=true    # what `voxtune cancel` does

`spec` is a RunSpec without `name` (the object's name is the run's name, so the CRD puts the
RunSpec name rules on metadata.name). The OpenAPI schema is a *structural* schema derived from
`RunSpec.model_json_schema()`: references inlined, `null` alternatives as `nullable`, the
discriminated union of data sources as one object whose `kind` picks the variant, and only
keywords the API server accepts. `status` is FineTuneRunStatus: the local executor's RunStatus
plus what only a cluster has (why a step is waiting, conditions, disruptions).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from voxtune.run.status import RunStatus, StepStatus
from voxtune.spec import RUN_NAME, RunSpec

GROUP, VERSION, KIND, PLURAL = "voxtune.io", "v1alpha1", "FineTuneRun", "finetuneruns"
API_VERSION = f"{GROUP}/{VERSION}"
CRD_NAME = f"{PLURAL}.{GROUP}"
RUN_LABEL = "voxtune.io/run"
STEP_LABEL = "voxtune.io/step"
CANCEL_ANNOTATION = "voxtune.io/cancel"  # any value but "false" cancels the run

# OpenAPI keywords a CRD schema may use (JSONSchemaProps), apart from the ones handled below.
_KEPT = {"type", "description", "enum", "pattern", "minimum", "maximum", "minItems", "maxItems",
         "minLength", "maxLength", "nullable", "required"}
_FORMATS = {"int32", "int64", "float", "double", "byte", "date", "date-time", "duration", "uri",
            "email", "hostname", "ipv4", "ipv6", "cidr", "mac", "uuid"}


# --- status -----------------------------------------------------------------------------------


class Condition(BaseModel):
    """A standard Kubernetes condition (`kubectl wait --for=condition=Complete ftr/NAME`)."""

    model_config = ConfigDict(populate_by_name=True)

    type: str = Field(description="Complete, Failed, Cancelled or Waiting.")
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: str = Field(alias="lastTransitionTime")


class KubeStepStatus(StepStatus):
    job: str | None = Field(None, description="The step's Job (`<run>-<step>`).")
    disruptions: int = Field(0, description="Pods preempted or evicted and retried; these are "
                             "not failures.")
    engine: str | None = Field(None, description="What runs a multi-node step: TrainJob or "
                               "JobSet (a one-node step is a Job).")
    nodes: str | None = Field(None, description="A multi-node step's nodes whose pod runs, "
                              "e.g. 2/2.")
    restarts: int = Field(0, description="Restarts of a multi-node step's whole group (a node "
                          "lost or preempted); training resumes from its last checkpoint.")


class FineTuneRunStatus(RunStatus):
    """RunStatus plus what only a cluster has; the FineTuneRun's `.status`."""

    steps: dict[str, KubeStepStatus] = Field(default_factory=dict)
    observed_generation: int | None = Field(None, description="metadata.generation last seen.")
    conditions: list[Condition] = Field(default_factory=list)

    def document(self) -> dict[str, Any]:
        """The JSON the API server stores."""
        return self.model_dump(mode="json", by_alias=True)


# --- the custom resource ----------------------------------------------------------------------


def spec_document(spec: RunSpec) -> dict[str, Any]:
    """A RunSpec as a FineTuneRun's `spec`: every field, resolved (the name is metadata.name)."""
    return spec.model_dump(mode="json", exclude={"name"})


def run_object(spec: RunSpec, namespace: str | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": spec.name}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata,
            "spec": spec_document(spec)}


def run_spec(run: dict[str, Any]) -> RunSpec:
    """The RunSpec of a FineTuneRun object; raises pydantic.ValidationError when invalid.

    A missing spec is an error, not "every default": the API server only guarantees a spec
    where this CRD's schema was installed, and `{}` says "defaults" on purpose."""
    spec = run.get("spec")
    if not isinstance(spec, dict):
        problem = ("missing: a FineTuneRun needs a spec (`spec: {}` for every default)"
                   if spec is None else
                   f"must be an object of RunSpec fields, not {_json_type(spec)} (see "
                   "`voxtune spec --schema`)")
        raise ValidationError.from_exception_data(KIND, [{
            "type": PydanticCustomError("spec_shape", problem), "loc": ("spec",),
            "input": spec}])
    return RunSpec.model_validate({**spec, "name": run["metadata"]["name"]})


def run_status(run: dict[str, Any]) -> FineTuneRunStatus:
    """The status of a FineTuneRun object, never an error (see `read_status`)."""
    return read_status(run)[0]


def read_status(run: dict[str, Any]) -> tuple[FineTuneRunStatus, list[str]]:
    """The status, and what of it could not be read (written by another version or by hand).

    Unreadable parts are dropped, the rest is kept: a step recorded as succeeded stays so (it
    is never run again) even when some other field is garbage. One bad step, metric or
    condition drops that entry (conditions: the list, which reconcile rebuilds)."""
    name, document = run["metadata"]["name"], run.get("status")
    if document is None:
        return FineTuneRunStatus(name=name), []
    if not isinstance(document, dict):
        return FineTuneRunStatus(name=name), [f"status: not an object but {_json_type(document)}"]
    try:
        return FineTuneRunStatus.model_validate({**document, "name": name}), []
    except ValidationError as error:
        problems = error.errors()
    kept = {key: dict(value) if isinstance(value, dict) else value
            for key, value in document.items()}
    for problem in problems:  # field validation is per field: dropping the bad ones suffices
        field, *inner = problem["loc"]
        if inner and isinstance(kept.get(field), dict):
            kept[field].pop(inner[0], None)
        else:
            kept.pop(field, None)
    lines = [f"status.{'.'.join(map(str, problem['loc']))}: {problem['msg']}"
             for problem in problems]
    return FineTuneRunStatus.model_validate({**kept, "name": name}), lines


def _json_type(value: Any) -> str:
    names = {str: "a string", list: "a list", bool: "a boolean", int: "a number",
             float: "a number", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def custom_resource_definition() -> dict[str, Any]:
    """The CustomResourceDefinition (apiextensions.k8s.io/v1) of FineTuneRun."""
    columns = [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Step", "type": "string", "jsonPath": ".status.step"},
        {"name": "Progress", "type": "string", "jsonPath": ".status.progress"},
        {"name": "WER", "type": "string", "jsonPath": ".status.wer",
         "description": "Word error rate on the eval split, base → tuned, in percent."},
        {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    schema = {
        "type": "object",
        "description": "A voxtune fine-tuning run: prepare → train → publish, one Job per step.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object", "properties": {"name": {
                "type": "string", "maxLength": 40, "pattern": RUN_NAME.pattern}}},
            "spec": spec_schema(),
            "status": status_schema(),
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME, "labels": {"app.kubernetes.io/name": "voxtune",
                                                  "app.kubernetes.io/part-of": "voxtune"}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"kind": KIND, "listKind": f"{KIND}List", "plural": PLURAL,
                      "singular": KIND.lower(), "shortNames": ["ftr"], "categories": ["voxtune"]},
            "versions": [{
                "name": VERSION, "served": True, "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": columns,
                "schema": {"openAPIV3Schema": schema},
            }],
        },
    }


def spec_schema() -> dict[str, Any]:
    schema = structural(RunSpec.model_json_schema(mode="validation"))
    schema["properties"].pop("name")
    schema["required"] = [f for f in schema.get("required", []) if f != "name"]
    if not schema["required"]:
        del schema["required"]
    return schema


def status_schema() -> dict[str, Any]:
    schema = structural(FineTuneRunStatus.model_json_schema(mode="serialization", by_alias=True))
    schema["properties"]["conditions"].update({"x-kubernetes-list-type": "map",
                                               "x-kubernetes-list-map-keys": ["type"]})
    return schema


# --- pydantic JSON schema → Kubernetes structural schema -------------------------------------


def structural(node: dict[str, Any], defs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Rewrite a pydantic JSON schema into what a CRD accepts (see the module docstring)."""
    defs = node.get("$defs", {}) if defs is None else defs
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        return structural({**target, **{k: v for k, v in node.items() if k != "$ref"}}, defs)
    options = node.get("anyOf") or node.get("oneOf")
    if options:
        present = [option for option in options if option.get("type") != "null"]
        if len(present) == 1:
            out = structural(present[0], defs)
        else:
            out = _union([structural(option, defs) for option in present],
                         node["discriminator"]["propertyName"])
        out.update(structural({k: v for k, v in node.items()
                               if k not in ("anyOf", "oneOf", "discriminator")}, defs))
        if len(present) < len(options):
            out["nullable"] = True
        return out
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: structural(child, defs) for name, child in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = structural(value, defs)
        elif key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out[key.replace("exclusiveM", "m")] = value  # OpenAPI 3.0: bound + boolean flag
            out[key] = True
        elif (key == "format" and value in _FORMATS) or (key in _KEPT and value != []):
            out[key] = value
    default = node.get("default")
    if isinstance(default, (str, int, float, bool)) and default != "" \
            and "properties" not in node:
        sentence = f"Default: {json.dumps(default)}."
        out["description"] = f"{out['description']} {sentence}" if "description" in out \
            else sentence
    return out


def _union(variants: list[dict[str, Any]], tag: str) -> dict[str, Any]:
    """One object schema for a discriminated union: every variant's fields, `tag` picks one."""
    kinds = [variant["properties"][tag]["enum"][0] for variant in variants]
    owners: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for kind, variant in zip(kinds, variants, strict=True):
        for name, schema in variant["properties"].items():
            owners.setdefault(name, []).append((kind, schema))
    properties = {name: _common(name, found, len(kinds)) for name, found in owners.items()}
    properties[tag] = {"type": "string", "enum": kinds,
                       "description": "Which kind of source this is; it decides which of the "
                                      "other fields apply."}
    described = " ".join(f"{kind}: {variant.get('description', '')}"
                         for kind, variant in zip(kinds, variants, strict=True))
    return {"type": "object", "description": described, "properties": properties,
            "required": [tag]}


def _common(name: str, found: list[tuple[str, dict[str, Any]]], variants: int) -> dict[str, Any]:
    """What the variants that have field `name` agree on, described per variant."""
    schemas = [schema for _, schema in found]
    if len({schema.get("type") for schema in schemas}) > 1:
        raise ValueError(f"union variants disagree on the type of {name!r}")
    out = {key: value for key, value in schemas[0].items()
           if key != "description" and all(other.get(key) == value for other in schemas)}
    if any(schema.get("nullable") for schema in schemas):
        out["nullable"] = True
    texts = {schema.get("description", "") for schema in schemas}
    if len(texts) == 1 and len(found) == variants:
        out["description"] = texts.pop()
    else:
        out["description"] = " ".join(f"{kind}: {schema.get('description', '')}"
                                      for kind, schema in found)
    return out
