#!/usr/bin/env python3
"""Property checks of the container, Compose and Kubernetes deployment files, offline.

Called by deploy/check-container.sh, which runs the external validators (docker compose config,
check-jsonschema, hadolint, kubernetes-validate, kubectl kustomize, promtool, shellcheck,
yamllint). This file checks what those tools cannot know: that the files agree with each other
and with the product (config keys, ports, paths, uid 10001, health commands).

    check_container.py dockerfile
    check_container.py configs
    check_container.py compose RESOLVED.json      (docker compose config --format json)
    check_container.py kustomize-files            (what each kustomization.yaml names exists)
    check_container.py kustomize-placeholders DIR (writes placeholder secret files into a copy)
    check_container.py kubernetes BUILT.yaml      (kubectl kustomize output)
    check_container.py prometheus-rules-path SRC DST  (a copy of prometheus.yml for promtool)
    check_container.py grafana

Each prints one line per check and exits 1 if any failed.
Needs Python 3.11+ (tomllib), PyYAML and dockerfile-parse.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import re
import shlex
import sys
import tomllib
from pathlib import Path

import yaml
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "container" / "Dockerfile"
IMAGE_CONFIG = DEPLOY / "container" / "wsus-edge.toml"
COMPOSE_DIR = DEPLOY / "compose"
K8S_DIR = DEPLOY / "kubernetes"
EXAMPLE_CONFIG = ROOT / "config" / "wsus-edge.example.toml"

UID = 10001
DATA_DIR = "/var/lib/wsus-edge"
CONFIG_PATH = "/etc/wsus-edge/wsus-edge.toml"
PORTS = {"8530/tcp", "8531/tcp", "8531/udp", "8540/tcp"}

failures: list[str] = []

# wsus-edge treats every WSUS_EDGE_* environment variable as a setting override and refuses to
# start on one that is not WSUS_EDGE_<SECTION>__<KEY> (or one of these).
PROCESS_VARIABLES = {"WSUS_EDGE_LOG", "WSUS_EDGE_LOG_FORMAT"}


def bad_env(names) -> list[str]:
    return sorted(n for n in names if n.upper().startswith("WSUS_EDGE_")
                  and "__" not in n and n.upper() not in PROCESS_VARIABLES)


def ok(what: str) -> None:
    print(f"  ok    {what}")


def fail(what: str) -> None:
    print(f"  FAIL  {what}")
    failures.append(what)


def check(cond: bool, what: str) -> bool:
    (ok if cond else fail)(what)
    return cond


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


# ------------------------------------------------------------------------------------------
# units


def duration_seconds(text: str) -> float:
    """'30s', '1h30m', '500ms', or a bare integer (seconds) -> seconds."""
    if isinstance(text, (int, float)):
        return float(text)
    text = text.strip()
    if re.fullmatch(r"\d+", text):
        return float(text)
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    total = 0.0
    pos = 0
    for m in re.finditer(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)", text):
        if m.start() != pos:
            raise ValueError(f"bad duration {text!r}")
        total += float(m.group(1)) * units[m.group(2)]
        pos = m.end()
    if pos != len(text) or pos == 0:
        raise ValueError(f"bad duration {text!r}")
    return total


def config_bytes(text) -> int:
    """wsus-edge sizes: '512MiB', '4GiB', '1.5 GiB', bare integer bytes."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|[KMGT]B|B)?\s*", text, re.I)
    if not m:
        raise ValueError(f"bad size {text!r}")
    n = float(m.group(1))
    unit = (m.group(2) or "B").upper()
    if unit == "B":
        mult = 1
    elif unit.endswith("IB") or len(unit) == 1:
        mult = 1024 ** ("KMGT".index(unit[0]) + 1)
    else:
        mult = 1000 ** ("KMGT".index(unit[0]) + 1)
    return int(n * mult)


def k8s_bytes(text) -> int:
    """Kubernetes quantities: '1536Mi', '3Gi', '2G', '100'."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(text))
    if not m:
        raise ValueError(f"bad quantity {text!r}")
    suffix = m.group(2) or ""
    mult = {"": 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
            "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}[suffix]
    return int(float(m.group(1)) * mult)


# ------------------------------------------------------------------------------------------
# wsus-edge configs


def known_keys() -> dict[str, set[str]]:
    """Sections and keys from config/wsus-edge.example.toml, which lists every key (settings that
    are off by default as '#key = value')."""
    keys: dict[str, set[str]] = {}
    section = None
    for line in EXAMPLE_CONFIG.read_text().splitlines():
        m = re.fullmatch(r"#?\[([a-z_]+)\]\s*", line)
        if m:
            section = m.group(1)
            keys.setdefault(section, set())
            continue
        m = re.match(r"#?([a-z_]+) = ", line)
        if m and section:
            keys[section].add(m.group(1))
    return keys


def load_toml(path: Path) -> dict | None:
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        fail(f"{rel(path)}: {e}")
        return None


def check_config_keys(path: Path, cfg: dict, keys: dict[str, set[str]]) -> None:
    problems = []
    for section, table in cfg.items():
        if section not in keys:
            problems.append(f"unknown section [{section}]")
            continue
        if not isinstance(table, dict):
            problems.append(f"{section} is not a section")
            continue
        for key in table:
            if key not in keys[section]:
                problems.append(f"unknown key {section}.{key}")
    check(not problems, f"{rel(path)}: sections and keys known to config/wsus-edge.example.toml"
          + (f" ({'; '.join(problems)})" if problems else ""))
    try:
        for section, key, parse in [("node", "shutdown_grace", duration_seconds),
                                    ("upstream", "sync_interval", duration_seconds),
                                    ("reports", "rollup_interval", duration_seconds),
                                    ("cache", "memory_bytes", config_bytes),
                                    ("cache", "disk_bytes", config_bytes),
                                    ("cache", "min_free_disk", config_bytes)]:
            if key in cfg.get(section, {}):
                parse(cfg[section][key])
        for net in cfg.get("admin", {}).get("read_networks", []):
            ipaddress.ip_network(net)
        ok(f"{rel(path)}: durations, sizes and read_networks parse")
    except ValueError as e:
        fail(f"{rel(path)}: {e}")
    listen = cfg.get("listen", {})
    for key in ("http", "https", "admin"):
        if key in listen:
            check(re.fullmatch(r"(\d+\.\d+\.\d+\.\d+|\[[0-9a-fA-F:]+\]):\d+", listen[key]) is not None,
                  f"{rel(path)}: listen.{key} is address:port")
    if "https" in listen:
        check("cert" in cfg.get("tls", {}) and "key" in cfg.get("tls", {}),
              f"{rel(path)}: listen.https has tls.cert and tls.key")
    up = cfg.get("upstream")
    if up is not None:
        check("url" in up, f"{rel(path)}: [upstream] has url")
        check(("client_cert" in up) == ("client_key" in up),
              f"{rel(path)}: upstream.client_cert and client_key together")


def node_configs() -> list[Path]:
    return ([IMAGE_CONFIG] + sorted((COMPOSE_DIR / "config").glob("*.toml"))
            + sorted(K8S_DIR.glob("*/wsus-edge.toml")))


def cmd_configs() -> None:
    print(f"wsus-edge configs (keys from {rel(EXAMPLE_CONFIG)})")
    keys = known_keys()
    check(len(keys) >= 8 and "shutdown_grace" in keys.get("node", set()),
          f"{rel(EXAMPLE_CONFIG)}: {len(keys)} sections read")
    for path in node_configs():
        cfg = load_toml(path)
        if cfg is None:
            continue
        check_config_keys(path, cfg, keys)
        check(cfg.get("node", {}).get("data_dir") == DATA_DIR, f"{rel(path)}: node.data_dir = {DATA_DIR}")
        admin = cfg.get("listen", {}).get("admin", "")
        check(admin.startswith("0.0.0.0:") or admin.startswith("[::]:"),
              f"{rel(path)}: listen.admin on all addresses (probes from outside the container)")
    image = load_toml(IMAGE_CONFIG) or {}
    check("upstream" not in image, f"{rel(IMAGE_CONFIG)}: a root config (no [upstream])")
    check(image.get("listen", {}).get("admin") == "0.0.0.0:8540", f"{rel(IMAGE_CONFIG)}: listen.admin = 0.0.0.0:8540")
    check(duration_seconds(image.get("node", {}).get("shutdown_grace", "30s")) < 10,
          f"{rel(IMAGE_CONFIG)}: node.shutdown_grace below docker stop's default 10s")


# ------------------------------------------------------------------------------------------
# Dockerfile


def dockerignore_patterns() -> list[str]:
    path = ROOT / ".dockerignore"
    if not path.exists():
        return []
    pats = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            pats.append(line)
    return pats


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Approximates Docker's .dockerignore matching: a path is excluded when a pattern matches it
    or one of its parent directories; '**/' matches any depth; '!' re-includes."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pat in patterns:
        neg = pat.startswith("!")
        p = pat[1:] if neg else pat
        p = p.strip("/")
        for prefix in prefixes:
            if fnmatch.fnmatchcase(prefix, p) or (p.startswith("**/") and
                                                  fnmatch.fnmatchcase(prefix.split("/")[-1], p[3:])):
                excluded = not neg
                break
    return excluded


def cmd_dockerfile() -> None:
    print(f"Dockerfile properties ({rel(DOCKERFILE)})")
    df = DockerfileParser(str(DOCKERFILE))
    instrs = [i for i in df.structure if i["instruction"] != "COMMENT"]
    stages: list[list[dict]] = []
    for i in instrs:
        if i["instruction"] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(i)
    check(len(stages) >= 2, f"multi-stage ({len(stages)} stages)")
    if len(stages) < 2:
        return
    builder, runtime = stages[0], stages[-1]

    channel = tomllib.loads((ROOT / "rust-toolchain.toml").read_text())["toolchain"]["channel"]
    major_minor = ".".join(channel.split(".")[:2])
    check(builder[0]["value"].split()[0] == f"rust:{major_minor}-bookworm",
          f"builder FROM rust:{major_minor}-bookworm (rust-toolchain.toml channel {channel})")
    check(runtime[0]["value"].split()[0] == "debian:bookworm-slim", "runtime FROM debian:bookworm-slim")
    check(any(i["instruction"] == "COPY" and "rust-toolchain.toml" in i["value"] for i in builder),
          "builder copies rust-toolchain.toml")
    build_runs = [i["value"] for i in builder if i["instruction"] == "RUN" and "cargo build" in i["value"]]
    check(any("--release" in r and "--locked" in r for r in build_runs), "cargo build --release --locked")
    check(any("type=cache" in r and "/usr/local/cargo/registry" in r for r in build_runs),
          "BuildKit cache mount for the cargo registry")
    check(any(re.search(r"type=cache,target=\S*target", r) for r in build_runs),
          "BuildKit cache mount for the target directory")

    def last(stage, name):
        vals = [i["value"] for i in stage if i["instruction"] == name]
        return vals[-1] if vals else None

    user = last(runtime, "USER")
    check(user is not None and user.split(":")[0] not in ("root", "0"), f"runtime USER non-root ({user})")
    check(user is not None and user.split(":")[0] in (str(UID), "wsus-edge"), f"runtime USER is uid {UID}")
    runs = " ".join(i["value"] for i in runtime if i["instruction"] == "RUN")
    check(re.search(rf"groupadd\b.*--gid {UID}\b.*wsus-edge", runs) is not None, f"group wsus-edge gid {UID}")
    check(re.search(rf"useradd\b.*--uid {UID}\b.*wsus-edge", runs) is not None, f"user wsus-edge uid {UID}")
    check(re.search(rf"install -d -o (wsus-edge|{UID}) .*{re.escape(DATA_DIR)}", runs) is not None,
          f"{DATA_DIR} owned by the node user")
    installed = re.findall(r"apt-get install ([^&;|]*)", runs)
    pkgs = {w for chunk in installed for w in chunk.split() if not w.startswith("-")}
    check(pkgs == {"ca-certificates"}, f"runtime installs ca-certificates only ({sorted(pkgs)})")
    check("rm -rf /var/lib/apt/lists" in runs, "apt lists removed")
    volumes = " ".join(i["value"] for i in runtime if i["instruction"] == "VOLUME")
    check(DATA_DIR in volumes, f"VOLUME {DATA_DIR}")
    exposed = set(" ".join(i["value"] for i in runtime if i["instruction"] == "EXPOSE").split())
    check(exposed == PORTS, f"EXPOSE {' '.join(sorted(PORTS))}")
    hc = last(runtime, "HEALTHCHECK") or ""
    m = re.search(r"\bCMD\s+(\[.*\])\s*$", hc)
    hc_cmd = json.loads(m.group(1)) if m else []
    check(hc_cmd[:2] == ["wsus-edge", "health"], f"HEALTHCHECK runs wsus-edge health ({hc_cmd})")
    check("--interval=" in hc and "--timeout=" in hc, "HEALTHCHECK has interval and timeout")
    entry = last(runtime, "ENTRYPOINT")
    check(entry is not None and json.loads(entry) == ["wsus-edge"], 'ENTRYPOINT ["wsus-edge"]')
    cmd = last(runtime, "CMD")
    check(cmd is not None and json.loads(cmd) == ["serve", "--config", CONFIG_PATH],
          f'CMD ["serve", "--config", "{CONFIG_PATH}"]')
    check(last(runtime, "STOPSIGNAL") == "SIGTERM", "STOPSIGNAL SIGTERM")
    labels = " ".join(i["value"] for i in runtime if i["instruction"] == "LABEL")
    for label in ("title", "description", "version", "revision", "created", "licenses"):
        check(f"org.opencontainers.image.{label}=" in labels, f"LABEL org.opencontainers.image.{label}")
    version_arg = next((i["value"] for i in runtime if i["instruction"] == "ARG"
                        and i["value"].startswith("VERSION=")), "")
    cargo_version = tomllib.loads((ROOT / "Cargo.toml").read_text())["package"]["version"]
    check(version_arg == f"VERSION={cargo_version}", f"ARG VERSION default = Cargo.toml version {cargo_version}")
    copies = [i["value"] for i in runtime if i["instruction"] == "COPY"]
    check(any("--from=builder" in c and c.split()[-1] == "/usr/bin/wsus-edge" for c in copies),
          "binary at /usr/bin/wsus-edge")
    check(any(c.split()[-2:] == ["deploy/container/wsus-edge.toml", CONFIG_PATH] for c in copies),
          f"default config deploy/container/wsus-edge.toml at {CONFIG_PATH}")
    check(not re.search(r"\b(curl|wget)\b", runs), "no curl or wget in the runtime image")

    # Every COPY source from the build context exists and is not excluded by .dockerignore.
    patterns = dockerignore_patterns()
    check(".git/" in patterns or ".git" in patterns, ".dockerignore excludes .git")
    check(dockerignored("target/release/wsus-edge", patterns), ".dockerignore excludes target/")
    check(dockerignored("data/state.db", patterns), ".dockerignore excludes data/")
    for stage in stages:
        for i in stage:
            if i["instruction"] != "COPY":
                continue
            words = [w for w in shlex.split(i["value"]) if not w.startswith("--")]
            if any(w.startswith("--from") for w in shlex.split(i["value"])):
                continue
            for src in words[:-1]:
                exists = (ROOT / src).exists()
                ignored = dockerignored(src, patterns)
                check(exists and not ignored,
                      f"COPY source {src} in the build context"
                      + ("" if exists else " (missing)") + (" (excluded by .dockerignore)" if ignored else ""))
    # cargo reads the [[bench]] paths of Cargo.toml when it loads the manifest.
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())
    copied = {w.rstrip("/") for i in builder if i["instruction"] == "COPY"
              for w in shlex.split(i["value"])[:-1] if not w.startswith("--")}
    dirs = {"bench": "benches", "test": "tests", "example": "examples", "bin": "src/bin"}
    for kind, folder in dirs.items():
        for target in cargo.get(kind, []):
            path = target.get("path") or f"{folder}/{target['name']}.rs"
            check(path.split("/")[0] in copied, f"builder copies {path} (Cargo.toml [[{kind}]] {target['name']})")
    lib = cargo.get("lib", {}).get("path", "src/lib.rs")
    check(lib.split("/")[0] in copied, f"builder copies {lib}")
    build_script = cargo["package"].get("build", "build.rs")
    if build_script and (ROOT / build_script).exists():
        check(build_script in copied, f"builder copies the build script {build_script}")
        if "BUILD_COMMIT" in (ROOT / build_script).read_text():
            check(any(re.search(r"BUILD_COMMIT=\S+ cargo build", r) for r in build_runs),
                  "cargo build gets BUILD_COMMIT (the build context has no .git)")
    check(not any(i["instruction"] == "ENV" and re.search(r"\bWSUS_EDGE_(?!\w*__)", i["value"])
                  for i in runtime),
          "runtime stage sets no WSUS_EDGE_* variable that is not a setting")


# ------------------------------------------------------------------------------------------
# Compose

NODE_SERVICES = ("central", "branch-a", "branch-b")


def cmd_compose(resolved_json: str) -> None:
    compose_file = COMPOSE_DIR / "compose.yaml"
    print(f"Compose properties ({rel(compose_file)})")
    raw = yaml.safe_load(compose_file.read_text())
    check("version" not in raw, "no top-level version: key (Compose Specification)")
    project = json.loads(Path(resolved_json).read_text())
    services = project.get("services", {})
    for name in ("init-pki", "init-central", "central", "branch-a", "branch-b", "clients-a", "clients-b",
                 "prometheus", "grafana"):
        check(name in services, f"service {name}")
    if failures:
        return

    # The node image is built once (init-pki) and shared by every wsus-edge service.
    image = services["init-pki"].get("image")
    build = services["init-pki"].get("build", {})
    check(Path(build.get("context", "")).resolve() == ROOT, "image built from the repository root")
    check(Path(build.get("context", ""), build.get("dockerfile", "")).resolve() == DOCKERFILE,
          f"with {rel(DOCKERFILE)}")
    for name in ("init-central",) + NODE_SERVICES + ("clients-a", "clients-b"):
        check(services[name].get("image") == image, f"{name} uses image {image}")
    for name, svc in services.items():
        if svc.get("image") == image:
            bad = bad_env(svc.get("environment") or {})
            check(not bad, f"{name}: no WSUS_EDGE_* variables that are not settings" + (f" {bad}" if bad else ""))

    # Bind-mount sources exist (configs, scripts, deploy/prometheus, deploy/grafana).
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            if vol.get("type") == "bind":
                src = Path(vol["source"])
                check(src.exists(), f"{name}: bind source {rel(src)} exists")

    # Published ports: only the branches' 8530, central's, Grafana's.
    for name, svc in services.items():
        ports = svc.get("ports", [])
        if name in ("branch-a", "branch-b"):
            check([p["target"] for p in ports] == [8530], f"{name}: publishes 8530 only")
        elif name in ("central", "grafana"):
            check(bool(ports), f"{name}: publishes its ports")
            for p in ports:
                if p["target"] == 8540 or name == "grafana":
                    check(p.get("host_ip") == "127.0.0.1" or name == "grafana",
                          f"{name}: {p['target']} published on the host's loopback only")
        else:
            check(not ports, f"{name}: publishes nothing")

    # Network with a pinned subnet, and read_networks of every node naming it.
    subnets = [c.get("subnet") for n in project.get("networks", {}).values()
               for c in (n.get("ipam", {}) or {}).get("config", []) or []]
    check(len(subnets) == 1, f"one network with a pinned subnet ({subnets})")
    subnet = ipaddress.ip_network(subnets[0]) if subnets else None

    configs: dict[str, dict] = {}
    for name in ("init-central",) + NODE_SERVICES:
        svc = services[name]
        binds = {v["target"]: Path(v["source"]) for v in svc.get("volumes", []) if v.get("type") == "bind"}
        named = {v["target"]: v["source"] for v in svc.get("volumes", []) if v.get("type") == "volume"}
        src = binds.get(CONFIG_PATH)
        if not check(src is not None and src.exists(), f"{name}: config mounted at {CONFIG_PATH}"):
            continue
        cfg = tomllib.loads(src.read_text())
        configs[name] = cfg
        data_dir = cfg["node"]["data_dir"]
        check(data_dir in named, f"{name}: data_dir {data_dir} on named volume {named.get(data_dir)}")
        # Every file the config names lies on a volume mounted into the service.
        for section, key in (("tls", "cert"), ("tls", "key"), ("tls", "client_ca"), ("upstream", "ca"),
                             ("upstream", "client_cert"), ("upstream", "client_key"),
                             ("upstream", "token_file"), ("downstream", "token_file"),
                             ("admin", "token_file")):
            path = cfg.get(section, {}).get(key)
            if path:
                check(any(path.startswith(t.rstrip("/") + "/") for t in named),
                      f"{name}: {section}.{key} {path} on a mounted volume")
        if name == "init-central":
            continue
        nets = [ipaddress.ip_network(n) for n in cfg.get("admin", {}).get("read_networks", [])]
        check(subnet is not None and any(subnet.subnet_of(n) for n in nets if n.version == subnet.version),
              f"{name}: admin.read_networks covers the compose subnet {subnet}")
        check(cfg["listen"].get("admin", "").endswith(":8540"), f"{name}: admin listener on 8540")
        test = svc.get("healthcheck", {}).get("test", [])
        check(test[:4] == ["CMD", "wsus-edge", "health", "--ready"],
              f"{name}: healthcheck wsus-edge health --ready")
        grace = duration_seconds(cfg["node"].get("shutdown_grace", "30s"))
        stop = duration_seconds(svc.get("stop_grace_period", "10s"))
        check(stop > grace, f"{name}: stop_grace_period {stop:g}s > node.shutdown_grace {grace:g}s")
        check(svc.get("read_only") is True, f"{name}: read-only root filesystem")
        check("ALL" in (svc.get("cap_drop") or []), f"{name}: all capabilities dropped")

    central = configs.get("central", {})
    check("upstream" not in central, "central is a root (no [upstream])")
    check(central.get("listen", {}).get("https", "").endswith(":8531"), "central: HTTPS on 8531")
    check("client_ca" in central.get("tls", {}), "central: tls.client_ca (mutual TLS)")
    check("token_file" in central.get("downstream", {}), "central: downstream.token_file")
    check(configs.get("init-central") == central, "init-central uses central's config")
    check(services["init-central"]["volumes"] and
          {v["source"] for v in services["init-central"]["volumes"] if v.get("type") == "volume"}
          >= {v["source"] for v in services["central"]["volumes"] if v.get("type") == "volume"},
          "init-central mounts central's volumes")
    for name in ("branch-a", "branch-b"):
        up = configs.get(name, {}).get("upstream", {})
        check(up.get("url") == "https://central:8531", f"{name}: upstream.url = https://central:8531")
        for key in ("ca", "client_cert", "client_key", "token_file"):
            check(key in up, f"{name}: upstream.{key}")
        deps = services[name].get("depends_on", {})
        check(deps.get("central", {}).get("condition") == "service_healthy", f"{name}: depends on central healthy")
        check(configs.get(name, {}).get("node", {}).get("name") == name, f"{name}: node.name = {name}")
    for name, branch in (("clients-a", "branch-a"), ("clients-b", "branch-b")):
        svc = services[name]
        env = svc.get("environment", {})
        check(env.get("SIMULATE_SERVER") == f"http://{branch}:8530", f"{name}: simulates against {branch}:8530")
        check(svc.get("depends_on", {}).get(branch, {}).get("condition") == "service_healthy",
              f"{name}: depends on {branch} healthy")
    check(services["central"].get("depends_on", {}).get("init-central", {}).get("condition")
          == "service_completed_successfully", "central: starts after init-central completed")
    check(services["init-central"].get("depends_on", {}).get("init-pki", {}).get("condition")
          == "service_completed_successfully", "init-central: starts after init-pki completed")
    # The data volumes are distinct.
    data_vols = [next(v["source"] for v in services[n]["volumes"] if v.get("target") == DATA_DIR)
                 for n in NODE_SERVICES]
    check(len(set(data_vols)) == len(data_vols), f"one data volume per node ({', '.join(data_vols)})")

    # Prometheus scrapes every node's 8540 and loads deploy/prometheus/alerts.yml.
    prom = services["prometheus"]
    binds = {v["target"]: Path(v["source"]) for v in prom.get("volumes", []) if v.get("type") == "bind"}
    cfg_path = next((s for t, s in binds.items() if t.endswith("/prometheus.yml")), None)
    if check(cfg_path is not None and cfg_path.exists(), "prometheus: prometheus.yml mounted"):
        pcfg = yaml.safe_load(cfg_path.read_text())
        targets = {t for job in pcfg.get("scrape_configs", []) for sc in job.get("static_configs", [])
                   for t in sc.get("targets", [])}
        for name in NODE_SERVICES:
            check(f"{name}:8540" in targets, f"prometheus scrapes {name}:8540")
        rule_globs = pcfg.get("rule_files", [])
        alert_targets = [t for t, s in binds.items() if s.resolve() == (DEPLOY / "prometheus" / "alerts.yml")]
        check(bool(alert_targets) and any(fnmatch.fnmatch(alert_targets[0], g) for g in rule_globs),
              "prometheus loads deploy/prometheus/alerts.yml through rule_files")
    graf = services["grafana"]
    gbinds = {v["target"]: Path(v["source"]) for v in graf.get("volumes", []) if v.get("type") == "bind"}
    check(gbinds.get("/etc/grafana/provisioning") == COMPOSE_DIR / "grafana" / "provisioning",
          "grafana: provisioning from deploy/compose/grafana/provisioning")
    check(any(s.resolve() == DEPLOY / "grafana" / "wsus-edge.json" for s in gbinds.values()),
          "grafana: dashboard deploy/grafana/wsus-edge.json mounted")


# ------------------------------------------------------------------------------------------
# Grafana provisioning


def dashboard_datasource_refs(node, out):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "datasource":
                out.append(v)
            else:
                dashboard_datasource_refs(v, out)
    elif isinstance(node, list):
        for v in node:
            dashboard_datasource_refs(v, out)


def cmd_grafana() -> None:
    prov = COMPOSE_DIR / "grafana" / "provisioning"
    print(f"Grafana provisioning ({rel(prov)})")
    ds_files = sorted((prov / "datasources").glob("*.yml"))
    uids = set()
    for f in ds_files:
        doc = yaml.safe_load(f.read_text())
        check(doc.get("apiVersion") == 1, f"{rel(f)}: apiVersion 1")
        for ds in doc.get("datasources", []):
            check(all(k in ds for k in ("name", "type", "url", "uid")), f"{rel(f)}: datasource {ds.get('name')} complete")
            check(ds.get("url") == "http://prometheus:9090", f"{rel(f)}: {ds.get('name')} -> the prometheus service")
            uids.add(ds.get("uid"))
    check(bool(ds_files), "a datasource file")
    paths = []
    for f in sorted((prov / "dashboards").glob("*.yml")):
        doc = yaml.safe_load(f.read_text())
        check(doc.get("apiVersion") == 1, f"{rel(f)}: apiVersion 1")
        for p in doc.get("providers", []):
            check(p.get("type") == "file" and "path" in p.get("options", {}), f"{rel(f)}: file provider {p.get('name')}")
            paths.append(p["options"]["path"])
    compose = yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())
    mounts = [v for v in compose["services"]["grafana"]["volumes"] if isinstance(v, str)]
    dash_target = next((v.split(":")[1] for v in mounts if v.split(":")[0].endswith("wsus-edge.json")), "")
    check(any(dash_target.startswith(p.rstrip("/") + "/") for p in paths),
          f"dashboard mount {dash_target} lies under a provider path {paths}")
    dash = DEPLOY / "grafana" / "wsus-edge.json"
    if not check(dash.exists(), f"{rel(dash)} exists"):
        return
    try:
        d = json.loads(dash.read_text())
    except json.JSONDecodeError as e:
        fail(f"{rel(dash)}: {e}")
        return
    ok(f"{rel(dash)}: JSON")
    check("__inputs" not in d, f"{rel(dash)}: no __inputs (file provisioning does not resolve ${{DS_...}} inputs)")
    dsvars = {v.get("name") for v in d.get("templating", {}).get("list", []) if v.get("type") == "datasource"}
    refs: list = []
    dashboard_datasource_refs(d.get("panels", []), refs)
    dashboard_datasource_refs(d.get("templating", {}), refs)
    bad = set()
    for r in refs:
        uid = r.get("uid") if isinstance(r, dict) else r
        if uid is None or uid in uids or uid in ("-- Grafana --", "grafana", "-- Mixed --", "-- Dashboard --"):
            continue
        if isinstance(uid, str) and uid.startswith("$"):
            if uid.strip("${}") in dsvars:
                continue
        bad.add(str(uid))
    check(not bad, f"{rel(dash)}: datasources resolve to provisioned uids {sorted(uids)} or datasource variables"
          + (f" (unresolved: {sorted(bad)})" if bad else ""))


# ------------------------------------------------------------------------------------------
# Kubernetes


def kustomizations() -> list[Path]:
    return sorted(K8S_DIR.rglob("kustomization.yaml"))


def generator_files(k: dict) -> list[tuple[str, str]]:
    """(generator name, file path) of configMapGenerator/secretGenerator entries."""
    out = []
    for gen in (k.get("configMapGenerator") or []) + (k.get("secretGenerator") or []):
        for f in gen.get("files") or []:
            out.append((gen["name"], f.split("=", 1)[-1]))
        for f in gen.get("envs") or []:
            out.append((gen["name"], f))
    return out


def cmd_kustomize_files() -> None:
    print(f"kustomization files ({rel(K8S_DIR)})")
    listed = set()
    for kpath in kustomizations():
        k = yaml.safe_load(kpath.read_text())
        base = kpath.parent
        check(k.get("kind") == "Kustomization" and k.get("apiVersion", "").startswith("kustomize.config.k8s.io/"),
              f"{rel(kpath)}: a Kustomization")
        for res in k.get("resources") or []:
            target = base / res
            good = target.is_file() or (target / "kustomization.yaml").is_file()
            check(good, f"{rel(kpath)}: resource {res} exists")
            listed.add(target.resolve())
        for name, f in generator_files(k):
            target = base / f
            if f.startswith("secrets/"):
                gitignore = K8S_DIR / ".gitignore"
                ignored = gitignore.exists() and "*/secrets/" in gitignore.read_text().splitlines()
                check(ignored, f"{rel(kpath)}: {name} reads {f} (made by the operator, git-ignored)")
            else:
                check(target.is_file(), f"{rel(kpath)}: {name} file {f} exists")
                listed.add(target.resolve())
    # Every manifest in the tree is used by some kustomization.
    for y in sorted(K8S_DIR.rglob("*.yaml")):
        if y.name == "kustomization.yaml" or "secrets" in y.parts:
            continue
        check(y.resolve() in listed, f"{rel(y)} is listed in a kustomization.yaml")


def cmd_kustomize_placeholders(copy_dir: str) -> None:
    """Placeholder files for the secretGenerators, in a copy of deploy/kubernetes."""
    root = Path(copy_dir)
    for kpath in sorted(root.rglob("kustomization.yaml")):
        k = yaml.safe_load(kpath.read_text())
        for name, f in generator_files(k):
            target = kpath.parent / f
            if f.startswith("secrets/") and not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(f"placeholder for {name}\n")


def cmd_kubernetes(built: str) -> None:
    print(f"Kubernetes properties (kubectl kustomize {rel(K8S_DIR)})")
    docs = [d for d in yaml.safe_load_all(Path(built).read_text()) if d]
    by_kind: dict[str, list[dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    for kind in ("Namespace", "ConfigMap", "Secret", "StatefulSet", "Service", "PodDisruptionBudget"):
        check(kind in by_kind, f"has {kind} ({len(by_kind.get(kind, []))})")
    namespaces = {d["metadata"]["name"] for d in by_kind.get("Namespace", [])}
    for d in docs:
        if d["kind"] != "Namespace":
            check(d["metadata"].get("namespace") in namespaces,
                  f"{d['kind']}/{d['metadata']['name']} in namespace {d['metadata'].get('namespace')}")
    configmaps = {d["metadata"]["name"]: d for d in by_kind.get("ConfigMap", [])}
    secrets = {d["metadata"]["name"]: d for d in by_kind.get("Secret", [])}
    services = by_kind.get("Service", [])
    pdbs = by_kind.get("PodDisruptionBudget", [])
    keys = known_keys()

    for sts in by_kind.get("StatefulSet", []):
        name = sts["metadata"]["name"]
        spec = sts["spec"]
        pod = spec["template"]["spec"]
        labels = spec["template"]["metadata"].get("labels", {})
        ann = spec["template"]["metadata"].get("annotations", {})
        sel = spec["selector"]["matchLabels"]
        print(f" {name}")
        check(all(labels.get(k) == v for k, v in sel.items()), f"{name}: selector matches the pod labels")
        check(spec.get("replicas") == 1, f"{name}: one replica")
        check(pod.get("enableServiceLinks") is False,
              f"{name}: enableServiceLinks false (wsus-edge rejects unknown WSUS_EDGE_* variables)")
        psc = pod.get("securityContext", {})
        check(psc.get("runAsNonRoot") is True, f"{name}: runAsNonRoot")
        check(psc.get("runAsUser") == UID and psc.get("runAsGroup") == UID and psc.get("fsGroup") == UID,
              f"{name}: runAsUser/runAsGroup/fsGroup {UID}")
        check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{name}: seccomp RuntimeDefault")
        check(ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/port") == "8540"
              and ann.get("prometheus.io/path") == "/metrics", f"{name}: prometheus.io annotations")
        headless = [s for s in services if s["metadata"]["name"] == spec.get("serviceName")]
        check(len(headless) == 1 and headless[0]["spec"].get("clusterIP") == "None",
              f"{name}: serviceName {spec.get('serviceName')} is a headless Service")
        check(any(all(sel.get(k) == v for k, v in p["spec"]["selector"].get("matchLabels", {}).items())
                  for p in pdbs), f"{name}: a PodDisruptionBudget selects it")
        containers = pod["containers"]
        check(len(containers) == 1, f"{name}: one container")
        c = containers[0]
        bad = bad_env(e["name"] for e in c.get("env", []))
        check(not bad, f"{name}: no WSUS_EDGE_* variables that are not settings" + (f" {bad}" if bad else ""))
        csc = c.get("securityContext", {})
        check(csc.get("readOnlyRootFilesystem") is True, f"{name}: readOnlyRootFilesystem")
        check(csc.get("allowPrivilegeEscalation") is False, f"{name}: allowPrivilegeEscalation false")
        check(csc.get("capabilities", {}).get("drop") == ["ALL"], f"{name}: capabilities drop ALL")
        check(c.get("image", "").split(":")[0].endswith("wsus-edge"), f"{name}: image {c.get('image')}")
        res = c.get("resources", {})
        check(all(k in res.get("requests", {}) and k in res.get("limits", {}) for k in ("cpu", "memory")),
              f"{name}: cpu and memory requests and limits")
        ports = {(p["containerPort"], p.get("protocol", "TCP")): p["name"] for p in c.get("ports", [])}
        check(ports.get((8540, "TCP")) == "admin", f"{name}: admin port 8540")
        check(ports.get((8530, "TCP")) == "http", f"{name}: http port 8530")

        def probe(kind, path):
            p = c.get(kind, {}).get("httpGet", {})
            port = p.get("port")
            return p.get("path") == path and (port == 8540 or ports.get((8540, "TCP")) == port)
        check(probe("livenessProbe", "/livez"), f"{name}: livenessProbe httpGet /livez on 8540")
        check(probe("readinessProbe", "/readyz"), f"{name}: readinessProbe httpGet /readyz on 8540")
        check(probe("startupProbe", "/readyz"), f"{name}: startupProbe httpGet /readyz on 8540")

        # The config: --config names a file of a mounted ConfigMap.
        args = c.get("args", [])
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
        vols = {v["name"]: v for v in pod.get("volumes", [])}
        cfg_arg = args[args.index("--config") + 1] if "--config" in args else None
        check(args[:1] == ["serve"] and cfg_arg is not None, f"{name}: args serve --config FILE")
        cfg = None
        if cfg_arg:
            mdir, fname = cfg_arg.rsplit("/", 1)
            m = mounts.get(mdir)
            cm_name = vols.get(m["name"], {}).get("configMap", {}).get("name") if m else None
            cm = configmaps.get(cm_name)
            if check(cm is not None and fname in cm.get("data", {}), f"{name}: {cfg_arg} from ConfigMap {cm_name}"):
                cfg = tomllib.loads(cm["data"][fname])
                check_config_keys(Path(f"ConfigMap {cm_name}"), cfg, keys)
        if cfg is None:
            continue
        data_dir = cfg["node"]["data_dir"]
        claim = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}
        check(mounts.get(data_dir, {}).get("name") in claim, f"{name}: data_dir {data_dir} on a volumeClaimTemplate")
        check("/tmp" in mounts and "emptyDir" in vols.get(mounts["/tmp"]["name"], {}), f"{name}: /tmp is an emptyDir")
        check(cfg["listen"].get("admin", "").endswith(":8540"), f"{name}: admin listener on 8540")
        # Files named by the config come from mounted Secrets that have those keys.
        for section, key in (("tls", "cert"), ("tls", "key"), ("tls", "client_ca"), ("upstream", "ca"),
                             ("upstream", "client_cert"), ("upstream", "client_key"),
                             ("upstream", "token_file"), ("downstream", "token_file"),
                             ("admin", "token_file")):
            path = cfg.get(section, {}).get(key)
            if not path:
                continue
            mdir, fname = path.rsplit("/", 1)
            m = mounts.get(mdir)
            sname = vols.get(m["name"], {}).get("secret", {}).get("secretName") if m else None
            sec = secrets.get(sname)
            check(sec is not None and fname in sec.get("data", {}), f"{name}: {section}.{key} from Secret {sname}")
        # Shutdown: preStop + shutdown_grace fit into terminationGracePeriodSeconds.
        grace = duration_seconds(cfg["node"].get("shutdown_grace", "30s"))
        pre = c.get("lifecycle", {}).get("preStop", {})
        pre_s = 0.0
        cmd = pre.get("exec", {}).get("command", [])
        if cmd[:1] == ["sleep"]:
            pre_s = float(cmd[1])
        pre_s = float(pre.get("sleep", {}).get("seconds", pre_s))
        tgp = pod.get("terminationGracePeriodSeconds", 30)
        check(tgp > grace + pre_s,
              f"{name}: terminationGracePeriodSeconds {tgp} > preStop {pre_s:g}s + node.shutdown_grace {grace:g}s")
        # The memory tier fits the memory limit with room for the rest.
        mem = config_bytes(cfg.get("cache", {}).get("memory_bytes", "512MiB"))
        limit = k8s_bytes(res.get("limits", {}).get("memory", "0"))
        check(mem + 256 * 2**20 <= limit, f"{name}: cache.memory_bytes + 256MiB within the memory limit")
        disk = config_bytes(cfg.get("cache", {}).get("disk_bytes", "100GiB"))
        free = config_bytes(cfg.get("cache", {}).get("min_free_disk", "1GiB"))
        pvc = k8s_bytes(spec["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"])
        check(disk + free <= pvc, f"{name}: cache.disk_bytes + min_free_disk within the volume claim")
        nets = [ipaddress.ip_network(n) for n in cfg.get("admin", {}).get("read_networks", [])]
        check(bool(nets), f"{name}: admin.read_networks set for the scraper")

        # Services selecting this pod: the ports they use exist on the container.
        mine = [s for s in services if s["spec"].get("selector")
                and all(labels.get(k) == v for k, v in s["spec"]["selector"].items())]
        names = {p["name"] for p in c.get("ports", [])}
        for s in mine:
            for p in s["spec"]["ports"]:
                tp = p.get("targetPort", p["port"])
                check(tp in names or any(cp == tp for cp, _ in ports),
                      f"{name}: Service {s['metadata']['name']} port {p['port']}/{p.get('protocol', 'TCP')} -> {tp}")
        admin_svc = [s for s in mine if s["spec"].get("type", "ClusterIP") == "ClusterIP"
                     and s["spec"].get("clusterIP") != "None"
                     and [p["port"] for p in s["spec"]["ports"]] == [8540]]
        check(len(admin_svc) == 1, f"{name}: a ClusterIP Service for the admin port 8540 alone")
        protos = {(p["port"], p.get("protocol", "TCP")) for s in mine for p in s["spec"]["ports"]}
        if "https" in cfg.get("listen", {}):
            check({(8530, "TCP"), (8531, "TCP"), (8531, "UDP")} <= protos,
                  f"{name}: Services for 8530/TCP, 8531/TCP and 8531/UDP")
        else:
            check((8530, "TCP") in protos, f"{name}: Service for 8530/TCP")
        if "upstream" in cfg:
            lb = [s for s in mine if s["spec"].get("type") in ("LoadBalancer", "NodePort")]
            check(bool(lb) and all(s["spec"].get("externalTrafficPolicy") == "Local" for s in lb),
                  f"{name}: clients' Service is LoadBalancer/NodePort with externalTrafficPolicy Local")
            url = cfg["upstream"]["url"]
            host = re.match(r"https?://([^:/]+)", url).group(1)
            svc_name = host.split(".")[0]
            check(any(s["metadata"]["name"] == svc_name for s in services) or "." in host,
                  f"{name}: upstream.url {url} names a Service")


def cmd_prometheus_rules_path(src: str, dst: str) -> None:
    """A copy of prometheus.yml whose rule_files point at deploy/prometheus/alerts.yml on this
    machine (the container path does not exist here), for `promtool check config`."""
    cfg = yaml.safe_load(Path(src).read_text())
    cfg["rule_files"] = [str(DEPLOY / "prometheus" / "alerts.yml")]
    Path(dst).write_text(yaml.safe_dump(cfg, sort_keys=False))


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    cmd, args = argv[0], argv[1:]
    table = {
        "dockerfile": cmd_dockerfile,
        "configs": cmd_configs,
        "compose": cmd_compose,
        "grafana": cmd_grafana,
        "kustomize-files": cmd_kustomize_files,
        "kustomize-placeholders": cmd_kustomize_placeholders,
        "kubernetes": cmd_kubernetes,
        "prometheus-rules-path": cmd_prometheus_rules_path,
    }
    if cmd not in table:
        print(f"unknown command {cmd}", file=sys.stderr)
        return 2
    try:
        table[cmd](*args)
    except Exception as e:  # a crash of a check is a failed check, with its cause
        fail(f"{cmd}: {type(e).__name__}: {e}")
    if failures:
        print(f"{cmd}: {len(failures)} check(s) failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
