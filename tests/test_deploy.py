"""The deployment files (deploy/): Kubernetes manifests validated strictly against current Kubernetes
schemas, the container image checked statically (no Docker engine here), the systemd unit verified
and scored by systemd-analyze. Each check reads the same numbers the files promise each other:
probe ports, the stop grace, the user id, the configuration keys."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import typer.main
import yaml

from etcdcron import apply as jobfiles
from etcdcron import config
from etcdcron.cli import app
from etcdcron.executor import KILL_GRACE

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
BIN = Path(sys.executable).parent
PROBE_PORT = 9180

# The oldest Kubernetes minor still supported upstream (November 2026) and the newest that
# kubernetes-validate 1.37.0 ships schemas for.
K8S_VERSIONS = ("1.35.0", "1.37.0")
# Node.stop's bounded waits besides the grace and the kill grace: the timer join (2 s), waiting for
# killed runs to be recorded (2 s), flushing completions (1 s) and history (5 s).
STOP_TAIL = 10.0
# systemd-analyze security's exposure (0 = locked down, 10 = none); the unit scored 1.1 on systemd 252.
MAX_EXPOSURE = 2.0


def _kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _deployment() -> dict:
    (dep,) = [d for f in _kustomization()["resources"] for d in _docs(K8S / f) if d["kind"] == "Deployment"]
    return dep


def _pod() -> dict:
    return _deployment()["spec"]["template"]


def _container(name: str) -> dict:
    spec = _pod()["spec"]
    (c,) = [c for c in spec["containers"] + spec.get("initContainers", []) if c["name"] == name]
    return c


def _generated_configmaps() -> list[dict]:
    """The ConfigMaps kustomize's configMapGenerator makes (less the content hash in the name)."""
    return [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]},
             "data": {Path(f).name: (K8S / f).read_text() for f in gen["files"]}}
            for gen in _kustomization().get("configMapGenerator", [])]


def _mounted_files(container: dict) -> dict[str, tuple[str, str]]:
    """Path in the container -> (ConfigMap or Secret name, key), through the pod's projected volumes."""
    volumes = {v["name"]: v for v in _pod()["spec"]["volumes"]}
    out = {}
    for m in container.get("volumeMounts", []):
        for src in volumes[m["name"]].get("projected", {}).get("sources", []):
            (kind, ref), = src.items()
            for item in ref["items"]:
                out[f"{m['mountPath']}/{item['path']}"] = (ref["name"], item["key"])
    return out


def _toml_in_pod() -> tuple[str, dict]:
    """The etcdcron.toml the serve container reads (from its --config), and its parsed content."""
    args = _container("etcdcron")["args"]
    path = args[args.index("--config") + 1]
    cm_name, key = _mounted_files(_container("etcdcron"))[path]
    (cm,) = [c for c in _generated_configmaps() if c["metadata"]["name"] == cm_name]
    return cm["data"][key], tomllib.loads(cm["data"][key])


def _validate(paths: list[Path], version: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "kubernetes-validate"), "--strict", "-k", version, *map(str, paths)],
                          capture_output=True, text=True, timeout=120)


def _command_options(name: str) -> set[str]:
    cmd = typer.main.get_command(app).commands.get(name)
    assert cmd is not None, f"the manifests run `etcdcron {name}`, which the CLI does not have"
    return {o for p in cmd.params for o in p.opts}


# ---- Kubernetes -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_validates_strictly(version, tmp_path):
    """Every resource kustomization.yaml lists, and the ConfigMaps it generates, pass kubernetes-validate --strict."""
    generated = tmp_path / "generated.yaml"
    generated.write_text(yaml.safe_dump_all(_generated_configmaps()))
    files = [K8S / f for f in _kustomization()["resources"]] + [generated]
    proc = _validate(files, version)
    print(proc.stdout, proc.stderr)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    resources = sum(len(_docs(f)) for f in files)
    assert proc.stdout.count("passed for resource") == resources, proc.stdout
    assert "WARN" not in proc.stdout + proc.stderr


def test_strict_validation_rejects_an_unknown_field(tmp_path):
    """The validator is really strict: one misspelt field in the Deployment fails it."""
    dep = _deployment()
    dep["spec"]["template"]["spec"]["terminationGracePeriod"] = 60
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(dep))
    proc = _validate([bad], K8S_VERSIONS[-1])
    assert proc.returncode != 0
    assert "terminationGracePeriod' was unexpected" in proc.stdout + proc.stderr


def test_kustomization_lists_files_that_exist_and_leaves_none_out():
    """kustomization.yaml names existing files, and every top-level manifest is one of them."""
    k = _kustomization()
    listed = set(k["resources"]) | {f for g in k["configMapGenerator"] for f in g["files"]}
    for f in listed:
        assert (K8S / f).is_file(), f"kustomization.yaml lists {f}, which does not exist"
    on_disk = {p.name for p in K8S.iterdir() if p.suffix in (".yaml", ".toml") and p.name != "kustomization.yaml"}
    assert on_disk == listed


def test_probes_hit_the_endpoints_serve_opens():
    """Liveness /healthz, readiness /readyz, on the port `serve --http` listens on; metrics scraped there too."""
    c = _container("etcdcron")
    args = c["args"]
    assert args[0] == "serve"
    assert args[args.index("--http") + 1] == f"0.0.0.0:{PROBE_PORT}"
    for probe, path in (("livenessProbe", "/healthz"), ("startupProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert c[probe]["httpGet"] == {"path": path, "port": PROBE_PORT}, probe
    assert {p["containerPort"] for p in c["ports"]} == {PROBE_PORT}
    ann = _pod()["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true"
    assert ann["prometheus.io/port"] == str(PROBE_PORT)
    assert ann["prometheus.io/path"] == "/metrics"


def test_termination_grace_outlasts_the_node_stop():
    """terminationGracePeriodSeconds exceeds serve.grace (from the ConfigMap's TOML) + kill grace + stop tail."""
    _, toml = _toml_in_pod()
    grace = config.BY_KEY["serve.grace"].convert(toml["serve"]["grace"])
    assert "--grace" not in _container("etcdcron")["args"]  # the TOML's grace is the one in force
    assert _pod()["spec"]["terminationGracePeriodSeconds"] > grace + KILL_GRACE + STOP_TAIL


def test_pod_meets_the_restricted_security_profile():
    """Non-root, seccomp RuntimeDefault, no token, and every container read-only, no capabilities, no escalation."""
    spec = _pod()["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] > 0
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in spec["containers"] + spec["initContainers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["capabilities"] == {"drop": ["ALL"]}, c["name"]
        assert "privileged" not in sc and "runAsUser" not in sc, c["name"]
        assert c["resources"]["requests"]["memory"] and c["resources"]["limits"]["memory"], c["name"]
        assert ":latest" not in c["image"], c["name"]


def test_etcdcron_containers_get_a_writable_tmp():
    """With the root file system read-only, /tmp of both etcdcron containers is an emptyDir."""
    volumes = {v["name"]: v for v in _pod()["spec"]["volumes"]}
    for name in ("etcdcron", "etcdcron-apply"):
        (tmp,) = [m for m in _container(name)["volumeMounts"] if m["mountPath"] == "/tmp"]
        assert "emptyDir" in volumes[tmp["name"]]


def test_disruption_budget_and_spread_select_the_pods():
    """The PodDisruptionBudget and both topology spread constraints select the Deployment's pods."""
    labels = _pod()["metadata"]["labels"]
    (pdb,) = [d for f in _kustomization()["resources"] for d in _docs(K8S / f) if d["kind"] == "PodDisruptionBudget"]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    spread = _pod()["spec"]["topologySpreadConstraints"]
    assert {t["topologyKey"] for t in spread} == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    for t in spread:
        assert t["labelSelector"]["matchLabels"].items() <= labels.items()
    assert _deployment()["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_configmap_toml_uses_only_known_settings_and_resolves(tmp_path):
    """The TOML in the ConfigMap has only keys of etcdcron.config.SETTINGS, and resolves without error."""
    text, toml = _toml_in_pod()
    keys = {f"{section}.{name}" for section, table in toml.items() for name in table}
    assert keys <= set(config.BY_KEY), keys - set(config.BY_KEY)
    f = tmp_path / "etcdcron.toml"
    f.write_text(text)
    cfg = config.resolve(config_file=str(f), environ={})
    assert cfg["etcd.endpoints"].startswith("https://")


def test_etcd_client_certs_come_from_the_secret():
    """etcd.ca, etcd.cert and etcd.key name files the pod mounts from the Secret etcdcron-etcd-client."""
    _, toml = _toml_in_pod()
    mounted = _mounted_files(_container("etcdcron"))
    secrets = {src["secret"]["name"] for v in _pod()["spec"]["volumes"]
               for src in v.get("projected", {}).get("sources", []) if "secret" in src}
    assert secrets == {"etcdcron-etcd-client"}
    for key in ("ca", "cert", "key"):
        assert mounted[toml["etcd"][key]][0] == "etcdcron-etcd-client", key


def test_jobs_configmap_is_applied_before_the_node_starts():
    """The initContainer runs `etcdcron apply --prune` on the mounted jobs file, and that file validates."""
    init = _container("etcdcron-apply")
    assert [c["name"] for c in _pod()["spec"]["initContainers"]] == ["etcdcron-apply"]
    args = init["args"]
    assert args[:2] == ["apply", "--prune"]
    jobs_path = args[-1]
    cm_name, key = _mounted_files(init)[jobs_path]
    (cm,) = [c for c in _generated_configmaps() if c["metadata"]["name"] == cm_name]
    assert cm["data"][key] == (K8S / "jobs.yaml").read_text()
    entries = jobfiles.load([str(K8S / "jobs.yaml")])
    assert {e.spec.kind for e in entries} <= set(tomllib.loads(_toml_in_pod()[0])["serve"]["allow_kinds"])


def test_manifest_and_unit_flags_exist_on_the_commands():
    """Every flag the Deployment and the systemd unit pass is an option of that etcdcron command."""
    commands = [c["args"] for c in (_container("etcdcron"), _container("etcdcron-apply"))]
    commands.append(shlex.split(_unit()["ExecStart"][0])[1:])
    commands.append(_dockerfile_json("CMD"))
    for argv in commands:
        options = _command_options(argv[0])
        for a in argv[1:]:
            if a.startswith("--"):
                assert a.split("=")[0] in options, f"etcdcron {argv[0]} has no {a}"


def test_podmonitor_selects_the_pods_and_their_metrics_port():
    """optional/podmonitor.yaml (a CRD, outside strict validation) selects the pods and a port they declare."""
    (pm,) = _docs(K8S / "optional" / "podmonitor.yaml")
    assert pm["apiVersion"] == "monitoring.coreos.com/v1" and pm["kind"] == "PodMonitor"
    assert pm["spec"]["selector"]["matchLabels"].items() <= _pod()["metadata"]["labels"].items()
    ports = {p["name"]: p["containerPort"] for p in _container("etcdcron")["ports"]}
    (ep,) = pm["spec"]["podMetricsEndpoints"]
    assert ports[ep["port"]] == PROBE_PORT and ep["path"] == "/metrics"


# ---- Dockerfile (static: no Docker engine on this machine) -------------------------------------


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _dockerfile_json(instruction: str) -> list[str]:
    (arg,) = [a for i, a in _dockerfile() if i == instruction]
    return yaml.safe_load(arg)  # exec form is a JSON array


def test_dockerfile_pins_its_base_image():
    """FROM names python 3.11 slim bookworm with a patch-level tag."""
    (base,) = [a for i, a in _dockerfile() if i == "FROM"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base), base


def test_dockerfile_installs_dependencies_before_copying_the_source():
    """pyproject.toml is copied alone and dependencies installed before any source is copied."""
    steps = _dockerfile()
    copies = [(n, a) for n, (i, a) in enumerate(steps) if i == "COPY"]
    assert copies[0][1] == "pyproject.toml ./"
    first_source = copies[1][0]
    assert any(i == "RUN" and "pip install -r" in a for i, a in steps[copies[0][0]:first_source])
    copied = {p for _, a in copies[1:] for p in a.split()[:-1]}
    # etcdcron/cli.py and etcdcron/analytics are symlinks to top-level paths: those must be copied too.
    targets = {(p.parent / p.readlink()).resolve().relative_to(ROOT).as_posix()
               for p in (ROOT / "etcdcron").iterdir() if p.is_symlink()}
    readme = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["readme"]
    assert targets | {readme, "etcdcron"} <= copied
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    for p in copied | {"pyproject.toml"}:
        assert f"!{p}" in ignore or f"!{p}/**" in ignore, f"{p} is left out of the build context"


def test_dockerfile_runs_as_the_pods_numeric_non_root_user():
    """USER is a numeric non-zero UID, the one the Deployment's runAsUser names."""
    (user,) = [a for i, a in _dockerfile() if i == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) > 0
    assert int(uid) == _pod()["spec"]["securityContext"]["runAsUser"]


def test_dockerfile_healthcheck_and_entrypoint():
    """HEALTHCHECK fetches /healthz on the probe port with Python; the image runs `etcdcron serve --http`."""
    (hc,) = [a for i, a in _dockerfile() if i == "HEALTHCHECK"]
    assert "urllib.request" in hc and f"127.0.0.1:{PROBE_PORT}/healthz" in hc and "curl" not in hc
    assert _dockerfile_json("ENTRYPOINT") == ["etcdcron"]
    cmd = _dockerfile_json("CMD")
    assert cmd[0] == "serve" and cmd[cmd.index("--http") + 1] == f"0.0.0.0:{PROBE_PORT}"


# ---- systemd ----------------------------------------------------------------------------------


def _unit(path: Path = DEPLOY / "etcdcron.service") -> dict[str, list[str]]:
    """Key -> values (repeated keys kept in order), continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def _systemd_analyze() -> str:
    exe = shutil.which("systemd-analyze")
    assert exe, "systemd-analyze is missing: install Debian's systemd package to check deploy/etcdcron.service"
    return exe


@pytest.fixture
def runnable_unit(tmp_path) -> Path:
    """The unit with ExecStart pointed at this venv's etcdcron (verify checks the binary exists)."""
    text = (DEPLOY / "etcdcron.service").read_text()
    assert "/opt/etcdcron/bin/etcdcron" in text
    unit = tmp_path / "etcdcron.service"
    unit.write_text(text.replace("/opt/etcdcron/bin/etcdcron", str(BIN / "etcdcron")))
    return unit


def test_unit_verifies_cleanly(runnable_unit):
    """systemd-analyze verify accepts the unit with no error and no warning (it only warns on unknown keys)."""
    proc = subprocess.run([_systemd_analyze(), "verify", str(runnable_unit)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "" and proc.stdout.strip() == "", proc.stdout + proc.stderr


def test_unit_exposure_score_is_low(runnable_unit):
    """systemd-analyze security --offline rates the unit's exposure below MAX_EXPOSURE."""
    proc = subprocess.run([_systemd_analyze(), "security", "--offline=true", "--no-pager", str(runnable_unit)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    score = float(re.search(r"Overall exposure level for etcdcron\.service: (\d+\.\d)", proc.stdout).group(1))
    print(f"systemd-analyze security: {score}")
    assert score < MAX_EXPOSURE, proc.stdout


def test_unit_stops_after_the_grace_and_hardens_the_node():
    """KillMode=mixed, TimeoutStopSec above --grace + kill grace + stop tail, a dynamic user and the sandbox."""
    u = _unit()
    argv = shlex.split(u["ExecStart"][0])
    grace = float(argv[argv.index("--grace") + 1])
    assert u["KillMode"] == ["mixed"]
    assert float(u["TimeoutStopSec"][0]) > grace + KILL_GRACE + STOP_TAIL
    assert float(u["TimeoutStopSec"][0]) == _pod()["spec"]["terminationGracePeriodSeconds"]
    for key, value in {"DynamicUser": "yes", "ProtectSystem": "strict", "NoNewPrivileges": "yes", "PrivateTmp": "yes",
                       "ProtectHome": "yes", "PrivateDevices": "yes", "ProtectKernelTunables": "yes",
                       "ProtectKernelModules": "yes", "LockPersonality": "yes", "RestrictRealtime": "yes",
                       "SystemCallArchitectures": "native",
                       "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6"}.items():
        assert u[key] == [value], key


def test_unit_passes_secrets_as_credentials():
    """The etcd password and key reach the node through LoadCredential=, by path, never by value."""
    u = _unit()
    creds = dict(c.split(":", 1) for c in u["LoadCredential"])
    assert set(creds) == {"etcd-password", "etcd-key"}
    argv = shlex.split(u["ExecStart"][0])
    assert argv[argv.index("--etcd-password-file") + 1] == "${CREDENTIALS_DIRECTORY}/etcd-password"
    assert argv[argv.index("--etcd-key") + 1] == "${CREDENTIALS_DIRECTORY}/etcd-key"
    assert not any(e.startswith("ETCDCRON_ETCD_PASSWORD") for e in u.get("Environment", []))
