"""The operator's YAML file of backends, models, deployments and domain grants.

`python manage.py apply_backends FILE` validates it whole, then applies it in one
transaction: rows named in the file are created or updated to match, rows not named are
left alone. Shape (see the README):

    backends:
      - name: local-agent
        base_url: http://127.0.0.1:8100/v1
        kind: agent            # agent | vllm | ollama | openai
        tee_type: none         # none | sev-snp | tdx
        allow_not_confidential: true
        provision_credential: true   # the platform generates the agent's credential and
                                     # sends it to the agent after each passed attestation
        api_key_env: ""        # or: read the credential from CUBEAI_BACKEND_KEY_<NAME>
    models:
      - name: smollm2-135m-instruct
        tasks: [chat, completion]
        context_length: 8192
        public: true
        capabilities: []
        deployments:
          - backend: local-agent
            upstream_model: smollm2-135m-instruct
        domains: [demo]        # routes or ids granted this model explicitly
"""

from typing import Annotated, Literal

import yaml
from django.core.exceptions import ValidationError
from django.db import transaction
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator
from pydantic import ValidationError as SchemaError

from domains.models import Domain
from inference import credentials
from inference.models import Backend, Deployment, Model, ModelAccess


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BackendSpec(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,99}$")]
    base_url: HttpUrl
    kind: Literal["agent", "vllm", "ollama", "openai"] = "agent"
    tee_type: Literal["none", "sev-snp", "tdx"] = "none"
    allow_not_confidential: bool = False
    provision_credential: bool = False
    api_key_env: str = ""
    enabled: bool = True

    @field_validator("api_key_env")
    @classmethod
    def _env_prefix(cls, value: str) -> str:
        if value and not credentials.env_name_allowed(value):
            raise ValueError(
                f"must be empty or a variable name starting with {credentials.ENV_PREFIX}"
            )
        return value


class DeploymentSpec(_Strict):
    backend: str
    upstream_model: Annotated[str, Field(min_length=1, max_length=200)]
    enabled: bool = True


class ModelSpec(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")]
    tasks: Annotated[
        list[Literal["chat", "completion", "embedding", "transcription", "translation"]],
        Field(min_length=1),
    ]
    context_length: Annotated[int, Field(ge=1)] = 2048
    public: bool = True
    owned_by: str = "cube-ai"
    description: str = ""
    capabilities: list[Literal["n", "tools", "logprobs", "response_format", "dimensions"]] = []
    deployments: list[DeploymentSpec] = []
    domains: list[str] = []


class RegistryFile(_Strict):
    backends: list[BackendSpec] = []
    models: list[ModelSpec] = []


class RegistryFileError(ValueError):
    """The file cannot be applied; the message lists every problem with its location."""


def load(text: str) -> RegistryFile:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise RegistryFileError(f"not valid YAML: {exc}") from None
    try:
        spec = RegistryFile.model_validate(data)
    except SchemaError as exc:
        lines = [
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        ]
        raise RegistryFileError("\n".join(lines)) from None
    backend_names = {b.name for b in spec.backends} | set(
        Backend.objects.values_list("name", flat=True)
    )
    problems = []
    for index, model in enumerate(spec.models):
        for d_index, deployment in enumerate(model.deployments):
            if deployment.backend not in backend_names:
                problems.append(
                    f"models.{index}.deployments.{d_index}.backend: unknown backend "
                    f"{deployment.backend!r}"
                )
        for route in model.domains:
            if not _domain_lookup(route):
                problems.append(f"models.{index}.domains: unknown domain {route!r}")
    if problems:
        raise RegistryFileError("\n".join(problems))
    return spec


def _domain_lookup(value: str) -> Domain | None:
    domains = Domain.objects.live()
    found = domains.filter(route=value).first()
    if found is None:
        try:
            found = domains.filter(pk=value).first()
        except Exception:
            found = None
    return found


def _save(row, label: str) -> None:
    try:
        row.full_clean()
    except ValidationError as exc:
        problems = "; ".join(
            f"{field}: {' '.join(msgs)}" for field, msgs in exc.message_dict.items()
        )
        raise RegistryFileError(f"{label}: {problems}") from None
    row.save()


def _sync(model_class, lookup: dict, values: dict, changes: list[str], label: str):
    row = model_class.objects.filter(**lookup).first()
    if row is None:
        row = model_class(**lookup, **values)
        _save(row, label)
        changes.append(f"create {label}")
        return row
    changed = [k for k, v in values.items() if getattr(row, k) != v]
    if changed:
        for key in changed:
            setattr(row, key, values[key])
        _save(row, label)
        changes.append(f"update {label}: {', '.join(changed)}")
    return row


def apply(spec: RegistryFile, *, dry_run: bool = False) -> list[str]:
    """Make the database match the file; returns the changes (rolled back on a dry run)."""
    changes: list[str] = []
    with transaction.atomic():
        backends = {}
        for b in spec.backends:
            values = b.model_dump(exclude={"name"})
            values["base_url"] = str(b.base_url).rstrip("/")
            backend = _sync(Backend, {"name": b.name}, values, changes, f"backend {b.name}")
            if backend.provision_credential and not backend.credential:
                credentials.backend_credential_set(
                    backend=backend, credential=credentials.credential_generate()
                )
                changes.append(f"generate the credential of backend {b.name}")
            backends[b.name] = backend
        for m in spec.models:
            values = m.model_dump(exclude={"name", "deployments", "domains"})
            model = _sync(Model, {"name": m.name}, values, changes, f"model {m.name}")
            for d in m.deployments:
                backend = backends.get(d.backend) or Backend.objects.get(name=d.backend)
                _sync(
                    Deployment,
                    {"model": model, "backend": backend},
                    {"upstream_model": d.upstream_model, "enabled": d.enabled},
                    changes,
                    f"deployment {m.name} on {d.backend}",
                )
            for route in m.domains:
                domain = _domain_lookup(route)
                _sync(
                    ModelAccess,
                    {"domain": domain, "model": model},
                    {"allowed": True},
                    changes,
                    f"access to {m.name} for domain {domain.route}",
                )
        if dry_run:
            transaction.set_rollback(True)
    return changes
