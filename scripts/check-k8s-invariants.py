#!/usr/bin/env python3
"""What a schema cannot say about deploy/k8s: the manifests agree with each other and with Herald.

- the pods' probes use routes Herald serves (/readyz, /healthz), and a preStop pause exists;
- the termination grace covers the preStop pause, the drain (server.shutdown_grace_secs in the ConfigMap)
  and the close that follows it (media 5 s + log and store 10 s, crates/herald-server/src/server.rs);
- the HPA follows the brief: 50 to 1,000 pods, a Pods metric on websocket_connections_total, the band of
  no change from 40 % to 80 % of the pod capacity (its annotation) around a target inside it, and a
  300 s scale-down stabilisation (the cooldown);
- the Services, the PodDisruptionBudget and prometheus-adapter's rule point at what exists.

Usage: check-k8s-invariants.py DEPLOY_K8S_DIR ROUTES_RS
"""

import sys
import tomllib
from pathlib import Path

import yaml

# After the drain: media in the pipeline (5 s) and closing the log and the store (10 s).
CLOSE_SECS = 15


def load(directory):
    docs = {}
    for path in sorted(Path(directory).glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs[(doc["kind"], doc["metadata"]["name"])] = doc
    return docs


def main():
    k8s_dir, routes_rs = sys.argv[1], sys.argv[2]
    docs = load(k8s_dir)
    routes = Path(routes_rs).read_text()
    problems = []

    def check(ok, message):
        if not ok:
            problems.append(message)

    deployment = docs[("Deployment", "herald")]
    pod = deployment["spec"]["template"]["spec"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    check(deployment["spec"]["selector"]["matchLabels"].items() <= labels.items(), "selector does not match the pods")
    container = pod["containers"][0]
    port_names = {p["name"] for p in container["ports"]}
    for probe, path in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz"), ("startupProbe", "/healthz")]:
        got = container.get(probe, {}).get("httpGet", {})
        check(got.get("path") == path, f"{probe} should GET {path}, has {got}")
        check(got.get("port") in port_names, f"{probe} port {got.get('port')} is not a container port")
        check(f'.route("{path}"' in routes, f"Herald's router serves no {path}")
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds")
    check(isinstance(pre_stop, int) and pre_stop > 0, "no preStop pause")

    config = docs[("ConfigMap", "herald-config")]
    toml = tomllib.loads(config["data"]["herald.toml"])
    drain = toml["server"]["shutdown_grace_secs"]
    needed = (pre_stop or 0) + drain + CLOSE_SECS
    grace = pod["terminationGracePeriodSeconds"]
    check(grace >= needed, f"terminationGracePeriodSeconds {grace} < preStop {pre_stop} + drain {drain} + close {CLOSE_SECS}")
    check(drain >= 30, f"the drain is {drain} s, the brief's grace period is 30 s")
    check(toml["storage"]["backend"] == "postgres" and toml["cluster"]["redis_urls"], "pods share no store: a cluster needs PostgreSQL and Redis")

    hpa = docs[("HorizontalPodAutoscaler", "herald")]
    spec = hpa["spec"]
    check(spec["scaleTargetRef"]["kind"] == "Deployment" and spec["scaleTargetRef"]["name"] == "herald", "HPA scales something else")
    check((spec["minReplicas"], spec["maxReplicas"]) == (50, 1000), "HPA bounds are not the brief's 50-1,000")
    [metric] = spec["metrics"]
    check(metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == "websocket_connections_total", "HPA metric is not connections per pod")
    capacity = float(hpa["metadata"]["annotations"]["connections-per-pod-capacity"])
    target = float(metric["pods"]["target"]["averageValue"])
    up = float(spec["behavior"]["scaleUp"]["tolerance"])
    down = float(spec["behavior"]["scaleDown"]["tolerance"])
    out_at, in_at = target * (1 + up) / capacity, target * (1 - down) / capacity
    check(abs(out_at - 0.8) <= 0.01, f"scale-out at {out_at:.3} of capacity, not 0.8")
    check(abs(in_at - 0.4) <= 0.01, f"scale-in at {in_at:.3} of capacity, not 0.4")
    check(in_at < target / capacity < out_at, "the target is outside the band")
    check(spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300, "scale-down cooldown is not 300 s")

    for name in ["herald", "herald-nodes"]:
        service = docs[("Service", name)]
        check(service["spec"]["selector"].items() <= labels.items(), f"Service {name} selects no pod")
        for port in service["spec"]["ports"]:
            check(port["targetPort"] in port_names, f"Service {name} targets a port the pods lack")
    pdb = docs[("PodDisruptionBudget", "herald")]
    check(pdb["spec"]["selector"]["matchLabels"].items() <= labels.items(), "the PodDisruptionBudget selects no pod")

    adapter = yaml.safe_load(docs[("ConfigMap", "herald-prometheus-adapter")]["data"]["config.yaml"])
    check(any(r["name"]["as"] == metric["pods"]["metric"]["name"] for r in adapter["rules"]), "prometheus-adapter serves no metric the HPA reads")

    secret_keys = set(docs[("Secret", "herald-secrets")]["stringData"])
    for env in container["env"]:
        ref = env.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            check(ref["name"] == "herald-secrets" and ref["key"] in secret_keys, f"{env['name']} reads a missing secret key")

    for message in problems:
        print(f"deploy/k8s: {message}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"deploy/k8s: {len(docs)} manifests agree (grace {grace} s >= {needed} s; scale out above {out_at:.0%}, in below {in_at:.0%})")


if __name__ == "__main__":
    main()
