"""The deployment files, checked statically (they are not built or applied on this machine):

- every Kubernetes manifest validates against Kubernetes' own schemas (kubernetes-validate, the
  latest version it ships, strict: an unknown field is an error), and the manifests agree with each
  other and with the code (probes, ports, selectors, non-root, read-only root, every service);
- the Compose file validates against the Compose specification's JSON schema (and `docker compose
  config` when Docker is installed), and runs every service from the image;
- the Dockerfile, parsed by BuildKit's parser: multi-stage, every package copied, non-root, a
  HEALTHCHECK, `nps` as the entrypoint, no compiler installed.
"""

from __future__ import annotations

import importlib.resources
import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import dockerfile
import jsonschema
import kubernetes_validate
import pytest
import yaml

from services.launcher import SERVICES, service_entry

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
COMPOSE = ROOT / "deploy" / "compose.yaml"
CONFIG_DOC = (ROOT / "docs" / "configuration.md").read_text()


def documents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(KUBE.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found.append((path.name, doc))
    return found


DOCS = documents()


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [d for _, d in DOCS if d["kind"] == kind]


# Kubernetes' own kinds; the Prometheus Operator's ServiceMonitor has no schema there (its own test below).
CORE = [(s, d) for s, d in DOCS if not d["apiVersion"].startswith("monitoring.coreos.com/")]


@pytest.mark.parametrize(("source", "doc"), CORE, ids=[f"{s}:{d['kind']}/{d['metadata']['name']}" for s, d in CORE])
def test_each_manifest_validates_against_the_kubernetes_schema(source: str, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, str(kubernetes_validate.latest_version()), strict=True)


def test_a_broken_manifest_is_refused() -> None:
    """The validator is live: a misspelt field fails it."""
    deployment = json.loads(json.dumps(of_kind("Deployment")[0]))
    deployment["spec"]["replica"] = deployment["spec"].pop("replicas")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, str(kubernetes_validate.latest_version()), strict=True)


def test_kustomization_lists_every_manifest_but_the_secret_template() -> None:
    listed = yaml.safe_load((KUBE / "kustomization.yaml").read_text())["resources"]
    present = {p.name for p in KUBE.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert sorted(listed) == sorted(present)


# Scoring runs as two deployments of one image: the counts and the response rates (scoring.yaml).
EXTRA_DEPLOYMENTS = {"nps-scoring-rates": "scoring"}


def test_every_service_has_a_hardened_deployment_probed_on_its_own_port() -> None:
    deployments = {d["metadata"]["name"]: d for d in of_kind("Deployment")}
    assert sorted(deployments) == sorted([f"nps-{s}" for s in SERVICES] + list(EXTRA_DEPLOYMENTS))
    for deployment, name in [(f"nps-{s}", s) for s in SERVICES] + list(EXTRA_DEPLOYMENTS.items()):
        pod = deployments[deployment]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["args"] == [name]
        port = service_entry(name)[0]().port
        assert container["ports"] == [{"name": "http", "containerPort": port}], name
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert {"cpu", "memory"} <= set(container["resources"]["limits"])
        assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp"}  # the only writable place
        binds = {e["name"]: e.get("value") for e in container["env"]}
        host_var = f"NPS_{name.upper()}_HOST"
        assert binds[host_var] == "0.0.0.0", name


def test_scoring_s_two_deployments_run_one_consumer_loop_each_and_the_api_is_the_counts() -> None:
    deployments = {d["metadata"]["name"]: d for d in of_kind("Deployment")}

    def consumers(name: str) -> Any:
        (container,) = deployments[name]["spec"]["template"]["spec"]["containers"]
        binds = {e["name"]: e.get("value") for e in container["env"]}
        return json.loads(binds["NPS_SCORING_CONSUMERS"])

    assert (consumers("nps-scoring"), consumers("nps-scoring-rates")) == (["counts"], ["rates"])
    (api,) = [s for s in of_kind("Service") if s["metadata"]["name"] == "nps-scoring"]
    assert api["spec"]["selector"] == {"app.kubernetes.io/name": "nps-scoring"}


def test_services_pdbs_and_the_hpa_select_what_exists() -> None:
    pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for d in of_kind("Deployment")}

    def selects(selector: dict[str, str]) -> list[str]:
        return [n for n, labels in pods.items() if selector.items() <= labels.items()]

    for service in of_kind("Service"):
        assert len(selects(service["spec"]["selector"])) == 1, service["metadata"]["name"]
        assert service["spec"]["ports"][0]["targetPort"] == "http"
    for pdb in of_kind("PodDisruptionBudget"):
        assert len(selects(pdb["spec"]["selector"]["matchLabels"])) == 1, pdb["metadata"]["name"]
    (hpa,) = of_kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "nps-ingest" and "nps-ingest" in pods


def test_the_service_monitor_scrapes_every_service() -> None:
    (monitor,) = of_kind("ServiceMonitor")
    wanted = monitor["spec"]["selector"]["matchLabels"]
    services = [s for s in of_kind("Service") if wanted.items() <= s["metadata"]["labels"].items()]
    labelled = sorted(s["metadata"]["labels"]["nps.dev/service"] for s in services)
    assert labelled == sorted([*SERVICES, *EXTRA_DEPLOYMENTS.values()])  # the rates pods are scoring's too
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    assert all(s["spec"]["ports"][0]["name"] == "http" for s in services)


def test_configuration_names_only_documented_variables() -> None:
    (config,) = of_kind("ConfigMap")
    (secret,) = of_kind("Secret")
    named = list(config["data"]) + list(secret["stringData"])
    for deployment in of_kind("Deployment"):
        named += [e["name"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]]
    for name in named:
        assert f"`{name}`" in CONFIG_DOC, f"{name} is not in docs/configuration.md"


def test_the_migration_job_migrates_then_creates_topics() -> None:
    (job,) = of_kind("Job")
    pod = job["spec"]["template"]["spec"]
    assert [c["args"] for c in pod["initContainers"]] == [["migrate"]]
    assert [c["args"] for c in pod["containers"]] == [["topics"]]


# --- Compose ---


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def test_compose_validates_against_the_compose_specification() -> None:
    schema = json.loads(
        importlib.resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    )
    jsonschema.validate(compose(), schema)
    broken = compose()
    broken["services"]["ingest"]["restart_policy"] = "always"  # not a service field
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def docker_compose() -> str | None:
    """The docker CLI, if its Compose plugin answers (this machine has the CLI without the plugin)."""
    docker = shutil.which("docker")
    if docker is None:
        return None
    version = subprocess.run([docker, "compose", "version"], capture_output=True, check=False)
    return docker if version.returncode == 0 else None


DOCKER = docker_compose()


@pytest.mark.skipif(DOCKER is None, reason="no Docker Compose plugin here: the schema check above stands for it")
def test_docker_compose_config_accepts_it() -> None:
    assert DOCKER is not None
    done = subprocess.run(
        [DOCKER, "compose", "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        env={"NPS_PSEUDONYM_SECRET": "x" * 32, "PATH": "/usr/local/bin:/usr/bin:/bin"},
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_compose_runs_every_service_after_the_setup_job_with_kafka_in_kraft_mode() -> None:
    services = compose()["services"]
    for name in SERVICES:
        service = services[name]
        assert service["command"] == [name]
        assert service["depends_on"]["setup"]["condition"] == "service_completed_successfully"
        port = service_entry(name)[0]().port
        assert service["ports"] == [f"{port}:{port}"]
        assert service["read_only"] is True
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "nps migrate && nps topics" in " ".join(services["setup"]["entrypoint"])
    mounts = " ".join(services["prometheus"]["volumes"])
    assert "rules.yml" in mounts and "prometheus.compose.yml" in mounts
    scraped = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.compose.yml").read_text())
    targets = {t["labels"]["service"]: t["targets"][0] for t in scraped["scrape_configs"][0]["static_configs"]}
    assert targets == {name: f"{name}:{service_entry(name)[0]().port}" for name in SERVICES}


# --- Dockerfile ---


def stages() -> list[list[dockerfile.Command]]:
    found: list[list[dockerfile.Command]] = []
    for command in dockerfile.parse_file(str(ROOT / "Dockerfile")):
        if command.cmd == "FROM":
            found.append([])
        if found:
            found[-1].append(command)
    return found


def test_the_image_is_multi_stage_non_root_healthchecked_and_runs_nps() -> None:
    build, final = stages()
    assert build[0].value[-2:] == ("AS", "build")
    final_cmds = {c.cmd: c for c in final}
    assert any(c.cmd == "COPY" and "--from=build" in c.flags for c in final)
    user = final_cmds["USER"].value[0].split(":")[0]
    assert user not in ("root", "0") and user.isdigit()
    assert final_cmds["HEALTHCHECK"].value == ("CMD", "nps", "probe")
    assert final_cmds["ENTRYPOINT"].json and final_cmds["ENTRYPOINT"].value == ("nps",)
    for command in final:  # nothing compiled or installed by a package manager in the final image
        assert not re.search(r"\b(apt-get|apk|gcc|build-essential|make)\b", command.original), command.original


def test_the_build_stage_copies_every_package_the_project_installs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    build, _ = stages()
    copied = {c.value[0].rstrip("/") for c in build if c.cmd == "COPY"}
    assert packages <= copied, packages - copied
    assert {"pyproject.toml", "README.md"} <= {v for c in build if c.cmd == "COPY" for v in c.value[:-1]}


def test_the_build_context_leaves_out_what_the_image_does_not_need() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", "tests", "var"} <= ignored


# --- nps probe: the image's HEALTHCHECK ---


def test_probe_asks_the_service_pid_1_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import http.server
    import threading

    from services.embedded import free_port
    from services.tools import probe

    class Healthy(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    port = free_port()
    monkeypatch.setenv("NPS_FOLLOWUP_PORT", str(port))
    monkeypatch.setenv("NPS_INGEST_PORT", str(free_port()))
    cmdline = tmp_path / "cmdline"
    cmdline.write_bytes(b"/opt/nps/bin/python\0/opt/nps/bin/nps\0followup\0")
    assert probe(None, cmdline) == 1  # nothing listens yet
    server = http.server.HTTPServer(("127.0.0.1", port), Healthy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert probe(None, cmdline) == 0
        assert probe("followup") == 0
        assert probe("ingest") == 1  # another service's port: nothing there
        assert probe("nope") == 2
        cmdline.write_bytes(b"/opt/nps/bin/nps\0migrate\0")
        assert probe(None, cmdline) == 2  # PID 1 runs no service: say so
        assert probe(None, tmp_path / "absent") == 2
    finally:
        server.shutdown()
        server.server_close()


def test_the_prune_cronjob_runs_scoring_s_and_themes_prune_with_a_retention_set() -> None:
    (cron,) = of_kind("CronJob")
    containers = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert sorted(c["args"] for c in containers) == [["scoring", "prune"], ["themes", "prune"]]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    (config,) = of_kind("ConfigMap")
    from ingest_service.settings import IngestSettings
    from scoring_service.settings import ScoringSettings
    from themes_service.settings import ThemesSettings

    for cls, name in ((ScoringSettings, "NPS_SCORING_RETENTION_DAYS"), (ThemesSettings, "NPS_THEMES_RETENTION_DAYS")):
        settings = cls(retention_days=int(config["data"][name]))
        # Nothing ingest still accepts (NPS_INGEST_MAX_AGE_DAYS) is ignored by scoring or themes.
        assert settings.retention_days >= IngestSettings().max_age_days
