"""deploy/ parses, and its files agree with each other and with the code: image, ports, environment variables,
instance storage, pools and limits, run monitoring, and the Kubernetes training launcher.

Helm keys are checked against the keys of the official chart's schema that these values use (read from
dagster-io/dagster helm/dagster/schema and templates/configmap-instance.yaml, chart 1.13 line); the values that
become the instance's dagster.yaml are rendered the way the chart's template does and validated by dagster's own
instance schema, so a misspelt or missing setting fails here rather than in a cluster.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from dagster import validate_run_config

from ft_assets.jobs import RECIPE_TAG
from tests.postgres_server import Postgres

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
PG_ENV = {"DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"}
IMAGE_SERVICES = ("code-location", "dagster-webserver", "dagster-daemon", "model-server")
# Chart keys these values may use: DagsterHelmValues and its subschemas (helm/dagster/schema/schema/charts).
CHART_KEYS = {
    "": {"global", "generatePostgresqlPasswordSecret", "postgresql", "dagster-user-deployments", "runLauncher",
         "dagsterDaemon", "concurrency", "telemetry"},
    "global": {"postgresqlSecretName", "dagsterHome", "serviceAccountName", "celeryConfigSecretName",
               "dagsterInstanceConfigMap"},
    "postgresql": {"image", "enabled", "postgresqlHost", "postgresqlUsername", "postgresqlPassword",
                   "postgresqlDatabase", "postgresqlParams", "postgresqlScheme", "service"},
    "dagster-user-deployments": {"enabled", "enableSubchart", "imagePullSecrets", "deployments"},
    "deployment": {"name", "image", "dagsterApiGrpcArgs", "codeServerArgs", "includeConfigInLaunchedRuns", "port",
                   "env", "envConfigMaps", "envSecrets", "annotations", "nodeSelector", "affinity", "tolerations",
                   "podSecurityContext", "securityContext", "resources", "livenessProbe", "readinessProbe",
                   "startupProbe", "labels", "volumeMounts", "volumes", "schedulerName"},
    "k8sRunLauncher": {"image", "imagePullPolicy", "jobNamespace", "loadInclusterConfig", "kubeconfigFile",
                       "envConfigMaps", "envSecrets", "envVars", "volumeMounts", "volumes", "labels",
                       "failPodOnRunFailure", "resources", "schedulerName", "securityContext", "runK8sConfig"},
    "runK8sConfig": {"containerConfig", "podSpecConfig", "podTemplateSpecMetadata", "jobSpecConfig", "jobMetadata"},
    "dagsterDaemon": {"enabled", "image", "runCoordinator", "heartbeatTolerance", "env", "envConfigMaps",
                      "envSecrets", "deploymentLabels", "labels", "nodeSelector", "affinity", "tolerations",
                      "podSecurityContext", "securityContext", "resources", "livenessProbe", "readinessProbe",
                      "startupProbe", "annotations", "runMonitoring", "runRetries", "sensors", "schedules",
                      "schedulerName", "volumeMounts", "volumes"},
    "queuedRunCoordinator": {"maxConcurrentRuns", "tagConcurrencyLimits", "dequeueIntervalSeconds",
                             "dequeueNumWorkers", "dequeueUseThreads", "blockOpConcurrencyLimitedRuns"},
    # read by templates/configmap-instance.yaml
    "runMonitoring": {"enabled", "startTimeoutSeconds", "cancelTimeoutSeconds", "maxResumeRunAttempts",
                      "pollIntervalSeconds", "freeSlotsAfterRunEndSeconds"},
    "runRetries": {"enabled", "maxRetries"},
    "concurrency": {"enabled", "pools", "runs"},
    "pools": {"defaultLimit", "granularity", "opGranularityRunBuffer"},
    "runs": {"maxConcurrentRuns", "tagConcurrencyLimits"},
}


def load(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text())


def dockerfile() -> list[str]:
    """Instructions with their continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / "Dockerfile").read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def docker_env() -> dict[str, str]:
    env = {}
    for line in dockerfile():
        if line.startswith("ENV "):
            env.update(dict(re.findall(r"(\w+)=(\S+)", line[4:])))
    return env


def helm_deployment() -> dict:
    (deployment,) = load("helm/values.yaml")["dagster-user-deployments"]["deployments"]
    return deployment


def env_vars_read(*modules: str) -> set[str]:
    names = set()
    for module in modules:
        names |= set(re.findall(r"os\.environ\.get\(\s*\"(\w+)\"", (REPO / module).read_text()))
    return names


def snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def test_production_instance_is_valid_and_on_postgres(monkeypatch):
    from dagster._core.instance.config import dagster_instance_config

    for var in PG_ENV:
        monkeypatch.setenv(var, "5432" if var.endswith("PORT") else "x")
    config, _ = dagster_instance_config(str(DEPLOY))  # dagster's own schema and cross-field checks
    db = config["storage"]["postgres"]["postgres_db"]
    assert {v["env"] for k, v in db.items() if isinstance(v, dict)} == PG_ENV
    assert db["scheme"] == "postgresql+psycopg2"  # the driver dagster-postgres installs
    compose_env = load("compose.yaml")["x-ftops-env"]
    assert PG_ENV <= set(compose_env)
    assert set(Postgres(port=1, data_dir=Path(), process=None, log_path=Path()).env()) == PG_ENV
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["run_monitoring"]["enabled"] and config["run_monitoring"]["free_slots_after_run_end_seconds"] > 0
    # The DefaultRunLauncher cannot resume; Dagster refuses a resume count with it.
    assert config["run_launcher"]["class"] == "DefaultRunLauncher"
    assert config["run_monitoring"]["max_resume_run_attempts"] == 0
    assert config["run_retries"]["enabled"] and config["run_retries"]["max_retries"] >= 1


def test_pools_and_limits_match_the_assets():
    from ft_assets.definitions import all_assets

    pools = {a.op.pool for a in all_assets if a.op.pool}
    training = {key.to_user_string() for a in all_assets if a.op.pool == "training" for key in a.keys}
    assert pools == {"training"} and {"sft_adapter", "dpo_adapter"} <= training
    instance = load("dagster.yaml")["concurrency"]
    helm = load("helm/values.yaml")["concurrency"]
    assert instance["pools"]["default_limit"] == helm["pools"]["defaultLimit"] == 1  # one training per box
    assert instance["pools"]["granularity"] == helm["pools"]["granularity"] == "op"
    assert instance["runs"]["tag_concurrency_limits"] == helm["runs"]["tagConcurrencyLimits"]
    assert [t["key"] for t in instance["runs"]["tag_concurrency_limits"]] == [RECIPE_TAG]
    assert instance["runs"]["max_concurrent_runs"] == helm["runs"]["maxConcurrentRuns"]


def test_helm_values_use_only_chart_keys():
    values = load("helm/values.yaml")
    daemon = values["dagsterDaemon"]
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    sections = {"": values, "global": values["global"], "postgresql": values["postgresql"],
                "dagster-user-deployments": values["dagster-user-deployments"], "deployment": helm_deployment(),
                "k8sRunLauncher": launcher, "runK8sConfig": launcher["runK8sConfig"], "dagsterDaemon": daemon,
                "queuedRunCoordinator": daemon["runCoordinator"]["config"]["queuedRunCoordinator"],
                "runMonitoring": daemon["runMonitoring"], "runRetries": daemon["runRetries"],
                "concurrency": values["concurrency"], "pools": values["concurrency"]["pools"],
                "runs": values["concurrency"]["runs"]}
    for section, node in sections.items():
        unknown = set(node) - CHART_KEYS[section]
        assert not unknown, f"helm values {section or 'top level'}: {unknown} not in the chart's schema"
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert daemon["runCoordinator"]["type"] == "QueuedRunCoordinator"


def test_helm_instance_settings_render_to_a_valid_instance_that_matches_dagster_yaml(tmp_path, monkeypatch):
    """What the chart's configmap-instance template makes of these values, validated by dagster itself."""
    from dagster._core.instance.config import dagster_instance_config
    from dagster_k8s import K8sRunLauncher

    values = load("helm/values.yaml")
    daemon = values["dagsterDaemon"]
    rendered = {
        "run_coordinator": {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator",
                            "config": {snake(k): v for k, v in
                                       daemon["runCoordinator"]["config"]["queuedRunCoordinator"].items()}},
        "run_monitoring": {snake(k): v for k, v in daemon["runMonitoring"].items()},
        "run_retries": {snake(k): v for k, v in daemon["runRetries"].items()},
        "concurrency": {"pools": {snake(k): v for k, v in values["concurrency"]["pools"].items()},
                        "runs": {snake(k): v for k, v in values["concurrency"]["runs"].items()}},
    }
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(rendered))
    config, _ = dagster_instance_config(str(tmp_path))
    ours = load("dagster.yaml")
    for key in ("start_timeout_seconds", "cancel_timeout_seconds", "poll_interval_seconds",
                "free_slots_after_run_end_seconds"):
        assert config["run_monitoring"][key] == ours["run_monitoring"][key], key
    assert config["run_monitoring"]["max_resume_run_attempts"] >= 1  # the K8sRunLauncher resumes dead run pods
    assert config["run_retries"]["max_retries"] == ours["run_retries"]["max_retries"]
    assert values["postgresql"]["postgresqlScheme"] == ours["storage"]["postgres"]["postgres_db"]["scheme"]
    # The run launcher's run_k8s_config, in the K8sRunLauncher's own config schema.
    run_k8s = {snake(k): v for k, v in values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"].items()}
    # instance_config_map is the chart's own (it renders the instance ConfigMap).
    assert validate_config_ok(K8sRunLauncher.config_type(), {"run_k8s_config": run_k8s,
                                                            "instance_config_map": "ftops-dagster-instance"})


def validate_config_ok(schema, value) -> bool:
    from dagster._config import process_config, resolve_to_config_type

    result = process_config(resolve_to_config_type(schema), value)
    assert result.success, [e.message for e in result.errors]
    return True


def test_one_image_everywhere_with_the_project_version():
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    services = load("compose.yaml")["services"]
    images = {services[name]["image"] for name in IMAGE_SERVICES}
    assert images == {f"ftops:{version}"}
    assert services["code-location"]["build"]["dockerfile"] == "deploy/Dockerfile"
    image = helm_deployment()["image"]
    assert f"{image['repository']}:{image['tag']}" == f"ftops:{version}"
    training = load("helm/training-run-config.yaml")["resources"]["training_compute"]["config"]["launcher"]
    repository, tag = training["kubernetes"]["image"].split(":")
    assert repository == image["repository"] and tag.startswith(version)


def test_ports_agree():
    services = load("compose.yaml")["services"]
    workspace = load("workspace.yaml")["load_from"][0]["grpc_server"]
    command = services["code-location"]["command"]
    code_port = int(command[command.index("-p") + 1])
    assert code_port == workspace["port"] == helm_deployment()["port"] == 4000
    assert workspace["host"] == "code-location" and workspace["location_name"] == "ftops"
    assert services["code-location"]["healthcheck"]["test"][-1] == str(code_port)
    cmd = next(line for line in dockerfile() if line.startswith("CMD "))
    assert f'"-p", "{code_port}"' in cmd and '"ft_assets.definitions"' in cmd
    web = services["dagster-webserver"]["command"]
    assert services["dagster-webserver"]["ports"] == [f"{web[web.index('-p') + 1]}:{web[web.index('-p') + 1]}"]
    serve = services["model-server"]["command"]
    assert serve[:2] == ["ftops", "serve"] and serve[serve.index("--alias") + 1] == "production"
    assert services["model-server"]["ports"] == [f"{serve[serve.index('--port') + 1]}:8000"]
    expose = next(line for line in dockerfile() if line.startswith("EXPOSE ")).split()[1:]
    assert {str(code_port), web[web.index("-p") + 1], "8000"} == set(expose)
    assert "/opt/dagster/workspace.yaml" in web


def test_environment_variables_are_the_ones_the_code_reads():
    read = env_vars_read("resources/paths.py", "resources/factory.py")
    compose = {k: v for k, v in load("compose.yaml")["x-ftops-env"].items() if k.startswith("FTOPS_")}
    docker = {k: v for k, v in docker_env().items() if k.startswith("FTOPS_")}
    helm = {k: v for k, v in helm_deployment()["env"].items() if k.startswith("FTOPS_")}
    # Every location the production resource set reads is set, to the same value, in all three.
    locations = {"FTOPS_HOME", "FTOPS_ARTIFACT_ROOT", "FTOPS_DROPS_DIR", "FTOPS_DVC_REPO", "FTOPS_DVC_REMOTE",
                 "FTOPS_REGISTRY", "FTOPS_DEPLOYMENT"}
    assert locations <= read | {"FTOPS_HOME"}
    assert compose == docker == helm
    assert set(compose) == locations, set(compose) ^ locations
    assert compose["FTOPS_DEPLOYMENT"] == "production"
    assert docker_env()["DAGSTER_HOME"] == load("compose.yaml")["x-ftops-env"]["DAGSTER_HOME"]
    # The shared volumes hold the artifact root and the drops.
    mounts = {m.split(":")[1] for m in load("compose.yaml")["services"]["code-location"]["volumes"]}
    assert {compose["FTOPS_HOME"], compose["FTOPS_DROPS_DIR"]} <= mounts
    assert helm_deployment()["volumeMounts"][0]["mountPath"] == compose["FTOPS_HOME"]


def test_dockerfile_installs_like_the_makefile():
    lines = dockerfile()
    makefile = (REPO / "Makefile").read_text()
    torch_pin = re.search(r"pip install --quiet (torch==[\d.]+)", makefile)[1]
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", "\n".join(lines), re.M))
    assert args["TORCH_VARIANT"] == "cpu" and f"torch=={args['TORCH_VERSION']}" == torch_pin
    install = " ".join(lines)
    assert "cpu) index=" in install and "cuda) index=" in install and "--index-url" in install
    extras = re.search(r'pip install[^"\n]* -e "\.\[([\w,]+)\]"', makefile)[1].split(",")
    assert re.search(r'DS_BUILD_OPS=0 python -m pip install --no-cache-dir -e "\.\[deepspeed\]"', install)
    assert "deepspeed" in extras
    copied = {line.split()[1] for line in lines if line.startswith("COPY ")}
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert {p.rstrip("*") for p in packages["include"]} | {"recipes"} <= copied
    assert f"COPY deploy/dagster.yaml {docker_env()['DAGSTER_HOME']}/dagster.yaml" in lines


def test_training_pods_request_gpus_through_the_compute_launcher():
    from ft_assets.definitions import defs
    from resources.compute import KubernetesLauncher, TrainingCompute

    config = load("helm/training-run-config.yaml")
    job = defs.resolve_job_def("end_to_end")
    validate_run_config(job, config)  # the launchpad accepts it as is
    fields = config["resources"]["training_compute"]["config"]["launcher"]["kubernetes"]
    compute = TrainingCompute(launcher=KubernetesLauncher(**fields))
    spec = compute.pod_spec()
    limits = spec["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == str(fields["gpus"])
    claim = {v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v}
    assert claim == {helm_deployment()["volumes"][0]["persistentVolumeClaim"]["claimName"]}


def test_readme_walks_through_every_file():
    readme = (DEPLOY / "README.md").read_text()
    for name in ("Dockerfile", "compose.yaml", "dagster.yaml", "workspace.yaml", "helm/values.yaml",
                 "helm/training-run-config.yaml", "FTOPS_REGISTRY", "FTOPS_DVC_REMOTE", "dagster debug export"):
        assert name in readme, name
    assert not (DEPLOY / "dagster.postgres.yaml").exists()  # folded into dagster.yaml


@pytest.mark.skipif("serve" not in (REPO / "ft_assets" / "cli.py").read_text(), reason="ftops serve not built yet")
def test_compose_model_server_command_parses():
    import subprocess
    import sys

    command = load("compose.yaml")["services"]["model-server"]["command"]
    out = subprocess.run([sys.executable, "-m", "ft_assets.cli", *command[1:], "--help"], capture_output=True,
                         text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
