#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Checks the manifests in deploy/kubernetes without a cluster.

No kubectl or schema is packaged for Debian 12, so this knows the part of
the Kubernetes API (v1.28) that the manifests use: every mapping key must be
a field of its object (a typo is an error, as with kubectl's strict field
validation), the kinds and apiVersions must match, and the keyfs rules hold:
the sidecar is privileged with Bidirectional propagation, the other
containers use HostToContainer, the master key Secret volume has mode 0400,
probes have a timeout, the Deployment's selector matches its labels.

    tests/k8s-check.py DIR [--ini OUT]

--ini OUT writes the ConfigMap's keyfs.ini to OUT.  Prints one line per
problem and exits 1 if there is any; "ok N objects" otherwise.
"""
import sys
from pathlib import Path

import yaml

META = {"name", "namespace", "labels", "annotations", "generateName"}
# Fields per object type: a set of names, or a dict name -> type of the
# value (a type name below, or [type] for a list of them).
T = {
    "ConfigMap": {"apiVersion": None, "kind": None, "metadata": "meta",
                  "data": "strmap", "binaryData": "strmap",
                  "immutable": None},
    "Secret": {"apiVersion": None, "kind": None, "metadata": "meta",
               "type": None, "data": "strmap", "stringData": "strmap",
               "immutable": None},
    "Deployment": {"apiVersion": None, "kind": None, "metadata": "meta",
                   "spec": "deploymentSpec"},
    "Kustomization": {"apiVersion": None, "kind": None, "resources": None,
                      "namespace": None, "images": None,
                      "commonLabels": None, "configMapGenerator": None,
                      "secretGenerator": None},
    "meta": META,
    "strmap": None,
    "deploymentSpec": {"replicas": None, "selector": "selector",
                       "template": "podTemplate", "strategy": None,
                       "minReadySeconds": None,
                       "revisionHistoryLimit": None,
                       "progressDeadlineSeconds": None, "paused": None},
    "selector": {"matchLabels": "strmap", "matchExpressions": None},
    "podTemplate": {"metadata": "meta", "spec": "podSpec"},
    "podSpec": {"containers": ["container"], "initContainers": ["container"],
                "volumes": ["volume"], "securityContext": "podSecurity",
                "terminationGracePeriodSeconds": None,
                "serviceAccountName": None, "nodeSelector": "strmap",
                "affinity": None, "tolerations": None,
                "restartPolicy": None, "hostname": None,
                "shareProcessNamespace": None,
                "automountServiceAccountToken": None,
                "priorityClassName": None, "dnsPolicy": None},
    "podSecurity": {"runAsUser", "runAsGroup", "runAsNonRoot", "fsGroup",
                    "supplementalGroups", "seccompProfile",
                    "fsGroupChangePolicy", "sysctls", "seLinuxOptions"},
    "container": {"name": None, "image": None, "imagePullPolicy": None,
                  "command": None, "args": None, "env": ["env"],
                  "envFrom": None, "ports": None,
                  "volumeMounts": ["volumeMount"],
                  "securityContext": "ctrSecurity",
                  "startupProbe": "probe", "readinessProbe": "probe",
                  "livenessProbe": "probe", "lifecycle": "lifecycle",
                  "resources": "resources", "workingDir": None,
                  "terminationMessagePath": None,
                  "terminationMessagePolicy": None, "stdin": None,
                  "tty": None},
    "env": {"name", "value", "valueFrom"},
    "volumeMount": {"name", "mountPath", "subPath", "subPathExpr",
                    "readOnly", "mountPropagation"},
    "ctrSecurity": {"privileged", "runAsUser", "runAsGroup", "runAsNonRoot",
                    "allowPrivilegeEscalation", "readOnlyRootFilesystem",
                    "capabilities", "seccompProfile", "seLinuxOptions",
                    "appArmorProfile", "procMount"},
    "probe": {"exec": "execAction", "httpGet": None, "tcpSocket": None,
              "grpc": None, "initialDelaySeconds": None,
              "periodSeconds": None, "timeoutSeconds": None,
              "successThreshold": None, "failureThreshold": None,
              "terminationGracePeriodSeconds": None},
    "execAction": {"command"},
    "lifecycle": {"preStop": "handler", "postStart": "handler"},
    "handler": {"exec": "execAction", "httpGet": None, "tcpSocket": None,
                "sleep": None},
    "resources": {"requests": "strmap", "limits": "strmap", "claims": None},
    "volume": {"name": None, "emptyDir": "emptyDir",
               "configMap": "configMapVol", "secret": "secretVol",
               "projected": None, "hostPath": None,
               "persistentVolumeClaim": None, "csi": None},
    "emptyDir": {"medium", "sizeLimit"},
    "configMapVol": {"name": None, "items": ["keyToPath"],
                     "defaultMode": None, "optional": None},
    "secretVol": {"secretName": None, "items": ["keyToPath"],
                  "defaultMode": None, "optional": None},
    "keyToPath": {"key", "path", "mode"},
}
API = {"ConfigMap": "v1", "Secret": "v1", "Deployment": "apps/v1",
       "Kustomization": "kustomize.config.k8s.io/v1beta1"}
PROPAGATION = {"None", "HostToContainer", "Bidirectional"}

problems = []


def walk(obj, typ, where):
    spec = T.get(typ)
    if spec is None:
        return
    if not isinstance(obj, dict):
        problems.append(f"{where}: expected a mapping ({typ})")
        return
    for k, v in obj.items():
        if k not in spec:
            problems.append(f"{where}: unknown field {k!r} in {typ}")
            continue
        sub = spec[k] if isinstance(spec, dict) else None
        if isinstance(sub, list):
            if not isinstance(v, list):
                problems.append(f"{where}.{k}: expected a list")
                continue
            for i, item in enumerate(v):
                walk(item, sub[0], f"{where}.{k}[{i}]")
        elif sub == "strmap":
            if not isinstance(v, dict) or not all(
                    isinstance(x, str) for x in v.values()):
                problems.append(f"{where}.{k}: expected strings")
        elif sub:
            walk(v, sub, f"{where}.{k}")


def check_deployment(d, where):
    spec = d["spec"]
    tpl = spec["template"]
    labels = tpl.get("metadata", {}).get("labels", {})
    for k, v in spec["selector"].get("matchLabels", {}).items():
        if labels.get(k) != v:
            problems.append(f"{where}: selector {k}={v} not in the labels")
    pod = tpl["spec"]
    if "fsGroup" in pod.get("securityContext", {}):
        problems.append(f"{where}: fsGroup makes the master key "
                        "group-readable")
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    names = set()
    for c in pod["containers"]:
        n = c["name"]
        if n in names:
            problems.append(f"{where}: container {n} twice")
        names.add(n)
        priv = c.get("securityContext", {}).get("privileged") is True
        for m in c.get("volumeMounts", []):
            if m["name"] not in vols:
                problems.append(f"{where}: {n} mounts unknown volume "
                                f"{m['name']}")
            prop = m.get("mountPropagation", "None")
            if prop not in PROPAGATION:
                problems.append(f"{where}: {n}: bad mountPropagation {prop}")
            if prop == "Bidirectional" and not priv:
                problems.append(f"{where}: {n}: Bidirectional needs "
                                "privileged: true")
        for p in ("startupProbe", "readinessProbe", "livenessProbe"):
            if p in c and not c[p].get("timeoutSeconds"):
                problems.append(f"{where}: {n}.{p} has no timeoutSeconds")
    sidecar = [c for c in pod["containers"] if c["name"] == "keyfs"]
    if not sidecar:
        problems.append(f"{where}: no keyfs container")
        return
    keyfs = sidecar[0]
    tree = [m for m in keyfs.get("volumeMounts", [])
            if m["mountPath"] == "/run/keyfs"]
    if not tree or tree[0].get("mountPropagation") != "Bidirectional":
        problems.append(f"{where}: keyfs's /run/keyfs is not Bidirectional")
        return
    shared = tree[0]["name"]
    if "emptyDir" not in vols.get(shared, {}):
        problems.append(f"{where}: the tree's volume is not an emptyDir")
    readers = [c for c in pod["containers"] if c is not keyfs]
    for c in readers:
        for m in c.get("volumeMounts", []):
            if m["name"] == shared and \
                    m.get("mountPropagation") != "HostToContainer":
                problems.append(f"{where}: {c['name']} mounts the tree "
                                "without HostToContainer")
    secrets = [v for v in vols.values() if "secret" in v and any(
        m["name"] == v["name"] and m["mountPath"].startswith("/etc/keyfs")
        for m in keyfs.get("volumeMounts", []))]
    for v in secrets:
        if v["secret"].get("defaultMode") != 0o400:
            problems.append(f"{where}: Secret volume {v['name']} is not "
                            "defaultMode 0400")
    if not any(v["secret"].get("secretName") == "keyfs-master-key"
               for v in secrets):
        problems.append(f"{where}: no master key Secret volume for keyfs")


def main():
    top = Path(sys.argv[1])
    ini_out = None
    if len(sys.argv) > 3 and sys.argv[2] == "--ini":
        ini_out = sys.argv[3]
    count = 0
    kinds = {}
    for f in sorted(top.glob("*.yaml")):
        for i, doc in enumerate(yaml.safe_load_all(f.read_text())):
            if doc is None:
                continue
            count += 1
            where = f"{f.name}[{i}]"
            kind = doc.get("kind")
            if kind not in API:
                problems.append(f"{where}: unexpected kind {kind}")
                continue
            if doc.get("apiVersion") != API[kind]:
                problems.append(f"{where}: {kind} is {API[kind]}, not "
                                f"{doc.get('apiVersion')}")
            walk(doc, kind, where)
            kinds.setdefault(kind, []).append((f.name, doc))
    for name, d in kinds.get("Deployment", []):
        check_deployment(d, name)
    for name, k in kinds.get("Kustomization", []):
        for r in k.get("resources", []):
            if not (top / r).is_file():
                problems.append(f"{name}: resource {r} is missing")
    cms = [d for _, d in kinds.get("ConfigMap", [])
           if "keyfs.ini" in d.get("data", {})]
    if not cms:
        problems.append("no ConfigMap with keyfs.ini")
    elif ini_out:
        Path(ini_out).write_text(cms[0]["data"]["keyfs.ini"])
    for p in problems:
        print(p)
    if problems:
        return 1
    print(f"ok {count} objects")
    return 0


sys.exit(main())
