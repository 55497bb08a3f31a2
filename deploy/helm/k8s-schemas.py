#!/usr/bin/env python3
"""Kubernetes JSON schemas for kubeconform, made from the Kubernetes OpenAPI (v2) spec.

kubeconform downloads its schemas from GitHub (yannh/kubernetes-json-schema) by default; this
writes the same layout locally from `api/openapi-spec/swagger.json` of the `k8s.io/kubernetes`
Go module, so validation needs only the Go module proxy:

    k8s-schemas.py SWAGGER_JSON OUT_DIR VERSION

writes OUT_DIR/v<VERSION>-standalone-strict/<kind>[-<group>]-<version>.json for every kind,
named as kubeconform looks them up (`{{ .ResourceKind }}{{ .KindSuffix }}.json`). Like the
published "standalone-strict" schemas (openapi2jsonschema --expanded --kubernetes --stand-alone
--strict): every $ref is inlined, objects with declared properties refuse unknown ones
(-strict catches misspelt keys), optional fields may be null, and int-or-string fields take
either.
"""

import copy
import json
import os
import sys


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    swagger_path, out_dir, version = sys.argv[1:]
    with open(swagger_path) as f:
        definitions = json.load(f)["definitions"]
    target = os.path.join(out_dir, "v%s-standalone-strict" % version.lstrip("v"))
    os.makedirs(target, exist_ok=True)
    expanded = {}
    written = 0
    for name, definition in definitions.items():
        for gvk in definition.get("x-kubernetes-group-version-kind", []):
            group, ver, kind = gvk.get("group", ""), gvk["version"], gvk["kind"]
            suffix = "-%s-%s" % (group.split(".")[0], ver) if group else "-%s" % ver
            if name not in expanded:
                expanded[name] = strict(expand(definitions, definition, (name,)), required=True)
            path = os.path.join(target, "%s%s.json" % (kind.lower(), suffix.lower()))
            with open(path, "w") as f:
                json.dump(expanded[name], f)
            written += 1
    print("%d schemas in %s" % (written, target))


def expand(definitions, node, stack):
    """`node` with every $ref inlined; a reference back into `stack` (a recursive type, e.g.
    JSONSchemaProps) becomes an open schema."""
    if isinstance(node, list):
        return [expand(definitions, item, stack) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    # (JSONSchemaProps has a property named "$ref": only a string is a reference.)
    if isinstance(ref, str):
        name = ref.split("/")[-1]
        if name in stack or name not in definitions:
            return {}
        inlined = expand(definitions, copy.deepcopy(definitions[name]), stack + (name,))
        if "description" in node:
            inlined["description"] = node["description"]
        return inlined
    return {key: expand(definitions, value, stack) for key, value in node.items()}


def strict(node, required):
    """Refuses unknown properties, lets optional fields be null, and accepts both forms of an
    int-or-string."""
    if isinstance(node, list):
        return [strict(item, True) for item in node]
    if not isinstance(node, dict):
        return node
    if node.get("format") == "int-or-string":
        node = {k: v for k, v in node.items() if k not in ("format", "type")}
        node["oneOf"] = [{"type": "string"}, {"type": "integer"}]
    out = {}
    needed = set(node.get("required", []))
    for key, value in node.items():
        if key == "properties" and isinstance(value, dict):
            out[key] = {prop: strict(schema, prop in needed) for prop, schema in value.items()}
        elif key in ("items", "additionalProperties", "allOf", "anyOf", "oneOf"):
            out[key] = strict(value, True)
        else:
            out[key] = value
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    if not required:
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        elif "oneOf" in out:
            out["oneOf"] = out["oneOf"] + [{"type": "null"}]
    return out


if __name__ == "__main__":
    main()
