"""Render a kustomization: with `kustomize build` or `kubectl kustomize` when one is installed,
else with the small renderer below.

The renderer implements exactly the subset deploy/k8s uses (a test checks it agrees with the
real kustomize whenever a binary is present): `resources` (files and directories),
`components`, `namespace`, `labels` (pairs on metadata only), `images` (newName/newTag),
`replicas`, and `patches` given as inline JSON 6902 operations with a target. Anything else in
a kustomization is refused, so the manifests cannot drift outside what is checked here.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]

SUPPORTED_KEYS = {
    "apiVersion",
    "kind",
    "resources",
    "components",
    "namespace",
    "labels",
    "images",
    "replicas",
    "patches",
}
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
    "IngressClass",
}


def kustomize_command() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def render_with_binary(path: Path, command: list[str]) -> list[Obj]:
    out = subprocess.run(
        [*command, str(path)], check=True, capture_output=True, text=True, timeout=60
    )
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def render(path: Path) -> list[Obj]:
    command = kustomize_command()
    return render_with_binary(path, command) if command else render_python(path)


# --- the fallback renderer ---------------------------------------------------------------------


class Unsupported(Exception):
    pass


def _load_kustomization(directory: Path) -> Obj:
    for name in ("kustomization.yaml", "kustomization.yml", "Kustomization"):
        if (directory / name).is_file():
            data = yaml.safe_load((directory / name).read_text())
            unknown = set(data) - SUPPORTED_KEYS
            if unknown:
                raise Unsupported(
                    f"{directory}: unsupported kustomization fields {sorted(unknown)}"
                )
            return data
    raise Unsupported(f"{directory}: no kustomization file")


def _load_resources(directory: Path, entries: list[str]) -> list[Obj]:
    objects: list[Obj] = []
    for entry in entries:
        target = (directory / entry).resolve()
        if target.is_dir():
            objects += render_python(target)
        else:
            if not target.is_relative_to(directory.resolve()):
                raise Unsupported(f"{entry}: files outside the kustomization root are refused")
            objects += [doc for doc in yaml.safe_load_all(target.read_text()) if doc]
    return objects


def render_python(directory: Path) -> list[Obj]:
    kustomization = _load_kustomization(directory)
    objects = _load_resources(directory, kustomization.get("resources", []))
    for component in kustomization.get("components", []):
        component_dir = (directory / component).resolve()
        spec = _load_kustomization(component_dir)
        if spec.get("kind") != "Component":
            raise Unsupported(f"{component}: not a Component")
        objects += _load_resources(component_dir, spec.get("resources", []))
        _apply_transformers(objects, spec)
    _apply_transformers(objects, kustomization)
    return objects


def _apply_transformers(objects: list[Obj], spec: Obj) -> None:
    for patch in spec.get("patches", []):
        _apply_patch(objects, patch)
    if "namespace" in spec:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = spec["namespace"]
    for label_set in spec.get("labels", []):
        if label_set.get("includeSelectors") or label_set.get("includeTemplates"):
            raise Unsupported("labels: only metadata labels are supported")
        for obj in objects:
            obj["metadata"].setdefault("labels", {}).update(label_set["pairs"])
    for replica in spec.get("replicas", []):
        matched = [
            o
            for o in objects
            if o["kind"] in ("Deployment", "StatefulSet", "ReplicaSet")
            and o["metadata"]["name"] == replica["name"]
        ]
        if not matched:
            raise Unsupported(f"replicas: nothing named {replica['name']}")
        for obj in matched:
            obj["spec"]["replicas"] = replica["count"]
    for image in spec.get("images", []):
        for obj in objects:
            _retag(obj, image)


def _split_image(image: str) -> tuple[str, str | None]:
    if "@" in image:
        raise Unsupported("image digests are not supported")
    name, sep, tag = image.rpartition(":")
    if sep and "/" not in tag:
        return name, tag
    return image, None


def _retag(node: Any, rule: Obj) -> None:
    if isinstance(node, dict):
        for key in ("containers", "initContainers"):
            for container in node.get(key) or []:
                name, tag = _split_image(container["image"])
                if name == rule["name"]:
                    new_name = rule.get("newName", name)
                    new_tag = rule.get("newTag", tag)
                    container["image"] = f"{new_name}:{new_tag}" if new_tag else new_name
        for value in node.values():
            _retag(value, rule)
    elif isinstance(node, list):
        for item in node:
            _retag(item, rule)


def _matches(obj: Obj, target: Obj) -> bool:
    unknown = set(target) - {"group", "version", "kind", "name"}
    if unknown:
        raise Unsupported(f"patch target fields {sorted(unknown)}")
    group, _, version = obj["apiVersion"].rpartition("/")
    return (
        target.get("kind", obj["kind"]) == obj["kind"]
        and target.get("name", obj["metadata"]["name"]) == obj["metadata"]["name"]
        and target.get("group", group) == group
        and target.get("version", version) == version
    )


def _apply_patch(objects: list[Obj], patch: Obj) -> None:
    if set(patch) != {"target", "patch"}:
        raise Unsupported("patches: only inline JSON 6902 patches with a target")
    operations = yaml.safe_load(patch["patch"])
    if not isinstance(operations, list):
        raise Unsupported("patches: only JSON 6902 operation lists")
    matched = [obj for obj in objects if _matches(obj, patch["target"])]
    if not matched:
        raise Unsupported(f"patch target matches nothing: {patch['target']}")
    for obj in matched:
        for operation in operations:
            _json_patch(obj, operation)


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise Unsupported(f"JSON pointer {path!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _json_patch(obj: Obj, operation: Obj) -> None:
    *parents, last = _pointer(operation["path"])
    node: Any = obj
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    op = operation["op"]
    if op not in ("add", "replace", "remove", "test"):
        raise Unsupported(f"JSON patch op {op}")
    if op == "test":  # the patch applies only where the document is as the overlay expects
        found = node[int(last)] if isinstance(node, list) else node[last]
        if found != operation["value"]:
            raise ValueError(f"{operation['path']} is {found!r}, not {operation['value']!r}")
        return
    if isinstance(node, list):
        index = len(node) if last == "-" else int(last)
        if op == "add":
            node.insert(index, copy.deepcopy(operation["value"]))
        elif op == "replace":
            node[index] = copy.deepcopy(operation["value"])
        else:
            del node[index]
        return
    if op in ("replace", "remove") and last not in node:
        raise KeyError(f"{operation['path']} does not exist")
    if op == "remove":
        del node[last]
    else:
        node[last] = copy.deepcopy(operation["value"])
