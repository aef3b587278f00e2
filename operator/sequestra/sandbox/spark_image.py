"""Real Spark for the sandbox: the distribution that PyPI's pyspark sdist carries, and an image of it for the real
node's pods.

PyPI's `pyspark==<SPARK>` is an sdist whose `deps/` holds a whole Spark distribution (bin/, sbin/, 328 jars with
the Kubernetes resource manager and fabric8's client) and `lib/` py4j's sources; it is downloaded once
(`pip download --no-deps`, about 456 MB) into the cache and unpacked into a SPARK_HOME there (`distribution`):
bin, sbin, jars, and python/lib with pyspark.zip (made here from the sdist's pyspark package) and py4j's zip,
where Spark's PythonRunner and Python workers look for them. The spark-operator's spark-submit runs from it on
this machine (sandbox/spark_real.py).

The image (`ensure`) is the project's Debian base (sandbox/image.py) with Debian's `openjdk-17-jre-headless`,
that SPARK_HOME at /opt/spark, an entrypoint of our own (spark_jobs/entrypoint.sh: `driver` runs spark-submit in
client mode bound to the pod's address, `executor` runs KubernetesExecutorBackend from the environment Spark
sets) and the PySpark jobs under /opt/sequestra/jobs (spark_jobs/*.py), run as the user `spark` (uid 185, as
Spark's own images). It is tagged by a hash of everything that goes into it and imported into the node's
containerd, as the workload image is.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

from sequestra.sandbox import image as image_build
from sequestra.sandbox import provision, realnode, versions
from sequestra.sandbox.errors import SandboxError
from sequestra.sandbox.paths import SandboxPaths

Progress = realnode.Progress

REPOSITORY = "localhost/sequestra/spark"
JOBS_SOURCE = Path(__file__).with_name("spark_jobs")
SPARK_HOME = "/opt/spark"
JOBS_DIR = "/opt/sequestra/jobs"
ENTRYPOINT = "/opt/entrypoint.sh"
JAVA_HOME = "/usr/lib/jvm/java-17-openjdk-amd64"
SPARK_UID = 185
# The trimmed base has no manual directories and no /etc/ssl/certs/java; the JRE's and ca-certificates-java's
# post-install scripts fail without them.
JRE_INSTALL = (
    "mkdir -p /usr/share/man/man1 /etc/ssl/certs/java"
    " && apt-get update -q"
    " && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends openjdk-17-jre-headless"
    " && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb"
)
# Bump when the recipe changes in a way the hashed inputs do not show.
RECIPE = "1"
# What of the sdist makes the distribution: its member prefix -> where under SPARK_HOME.
SDIST_PARTS = {"deps/bin/": "bin/", "deps/sbin/": "sbin/", "deps/jars/": "jars/", "lib/": "python/lib/"}


def spark_dir(paths: SandboxPaths) -> Path:
    return paths.cache / "spark"


def sdist(paths: SandboxPaths) -> Path:
    return spark_dir(paths) / "download" / f"pyspark-{versions.SPARK}.tar.gz"


def spark_home(paths: SandboxPaths) -> Path:
    """The distribution unpacked on this machine: SPARK_HOME for the spark-operator's spark-submit."""
    return spark_dir(paths) / f"spark-{versions.SPARK}"


def download(paths: SandboxPaths, progress: Progress) -> None:
    """The pyspark sdist into the cache, once."""
    if sdist(paths).exists():
        return
    progress(f"downloading pyspark=={versions.SPARK} (its sdist holds a Spark distribution, 456 MB) from PyPI")
    target = sdist(paths).parent
    target.mkdir(parents=True, exist_ok=True)
    provision.run_logged(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", str(target),
         f"pyspark=={versions.SPARK}"],
        cwd=target, log=paths.logs / "provision-spark.log", what=f"downloading pyspark=={versions.SPARK}")
    if not sdist(paths).exists():
        raise SandboxError(f"pip downloaded no {sdist(paths).name} into {target}")


def _distribution_key() -> str:
    return f"pyspark-{versions.SPARK} parts {sorted(SDIST_PARTS.items())} pyspark.zip"


def unpack(paths: SandboxPaths, progress: Progress) -> Path:
    """The sdist's Spark distribution as a SPARK_HOME in the cache (once per version). Returns it."""
    home = spark_home(paths)
    stamp = home / ".sequestra-version"
    if stamp.exists() and stamp.read_text().strip() == _distribution_key():
        return home
    progress(f"unpacking Spark {versions.SPARK} from {sdist(paths).name} into {home}")
    partial = home.with_name(home.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    top = f"pyspark-{versions.SPARK}/"
    package = io.BytesIO()
    with tarfile.open(sdist(paths), "r:gz") as tar, zipfile.ZipFile(package, "w", zipfile.ZIP_DEFLATED) as pyspark_zip:
        for member in tar:
            name = member.name.removeprefix(top)
            if name.startswith("pyspark/") and member.isfile() and not name.endswith(".pyc"):
                source = tar.extractfile(member)
                if source is not None:
                    pyspark_zip.writestr(name, source.read())
                continue
            prefix = next((p for p in SDIST_PARTS if name.startswith(p)), None)
            if prefix is None or not member.isfile() or name.endswith(".cmd"):
                continue
            target = partial / SDIST_PARTS[prefix] / name.removeprefix(prefix)
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            if source is not None:
                with target.open("wb") as out:
                    shutil.copyfileobj(source, out)
                target.chmod(0o755 if member.mode & 0o111 else 0o644)
    (partial / "python" / "lib" / "pyspark.zip").write_bytes(package.getvalue())
    (partial / "conf").mkdir(exist_ok=True)
    kubernetes_jar = f"jars/spark-kubernetes_{versions.SCALA}-{versions.SPARK}.jar"
    for needed in ("bin/spark-submit", "bin/spark-class", kubernetes_jar):
        if not (partial / needed).exists():
            raise SandboxError(f"{sdist(paths).name} has no {needed}: not the Spark distribution expected")
    shutil.rmtree(home, ignore_errors=True)
    partial.replace(home)
    stamp.write_text(_distribution_key() + "\n")
    return home


def _job_files() -> list[Path]:
    return sorted(p for p in JOBS_SOURCE.iterdir() if p.is_file() and p.suffix in (".py", ".sh"))


def image_name() -> str:
    recipe = hashlib.sha256()
    for part in (image_build.base_key(), versions.SPARK, JRE_INSTALL, RECIPE, _distribution_key()):
        recipe.update(part.encode() + b"\0")
    for path in _job_files():
        recipe.update(path.name.encode() + b"\0" + path.read_bytes())
    return f"{REPOSITORY}:{versions.SPARK}-{recipe.hexdigest()[:12]}"


def job_path(job: str) -> str:
    """Where a job (`healthy`, `runaway`) is in the image, as a SparkApplication names it."""
    if not (JOBS_SOURCE / f"{job}.py").exists():
        raise ValueError(f"no Spark job {job!r}: one of {', '.join(p.stem for p in _job_files() if p.suffix == '.py')}")
    return f"local://{JOBS_DIR}/{job}.py"


def build(paths: SandboxPaths, progress: Progress) -> str:
    """The image in the sandbox's buildah storage (built when missing: base, JRE, Spark, entrypoint, jobs).
    Returns its name. Needs no running node."""
    name = image_name()
    provision.install_debian_packages(progress, image_build.BUILD_TOOLS)
    image_build.images_dir(paths).mkdir(parents=True, exist_ok=True)
    (paths.state / "buildah-run").mkdir(parents=True, exist_ok=True)
    buildah = image_build.Buildah(paths, paths.logs / "spark-image.log")
    if buildah.has_image(name):
        return name
    download(paths, progress)
    home = unpack(paths, progress)
    image_build.build_base(paths, buildah, progress)
    started = time.monotonic()
    progress(f"building {name}: {image_build.BASE_IMAGE} + openjdk-17-jre-headless + Spark {versions.SPARK}")
    container = buildah.run("from", "--pull=never", image_build.BASE_IMAGE, what="starting the Spark image")
    try:
        run = ["run", "--isolation", "chroot", container, "--"]
        buildah.run(*run, "sh", "-c", JRE_INSTALL, what="installing openjdk-17-jre-headless")
        buildah.run(*run, "sh", "-c",
                    f"useradd --system --uid {SPARK_UID} --user-group --home-dir {SPARK_HOME}/work-dir "
                    f"--no-create-home spark && mkdir -p {SPARK_HOME}/work-dir {JOBS_DIR}",
                    what="adding the user spark")
        buildah.run("copy", container, str(home), SPARK_HOME, what="adding the Spark distribution")
        buildah.run(*run, "sh", "-c", f"rm -f {SPARK_HOME}/.sequestra-version && chown -R {SPARK_UID}:{SPARK_UID} "
                    f"{SPARK_HOME}/work-dir {SPARK_HOME}/conf", what="handing spark its working directories")
        for path in _job_files():
            if path.name == "entrypoint.sh":
                buildah.run("copy", "--chmod", "0755", container, str(path), ENTRYPOINT, what="adding the entrypoint")
            else:
                buildah.run("copy", "--chmod", "0644", container, str(path), f"{JOBS_DIR}/{path.name}",
                            what=f"adding the job {path.name}")
        buildah.run(
            "config", "--entrypoint", json.dumps([ENTRYPOINT]), "--cmd", "[]",
            "--user", f"{SPARK_UID}:{SPARK_UID}", "--workingdir", f"{SPARK_HOME}/work-dir",
            "--env", f"SPARK_HOME={SPARK_HOME}", "--env", f"JAVA_HOME={JAVA_HOME}", "--env", "PYTHONUNBUFFERED=1",
            "--env", "PYSPARK_PYTHON=python3", container, what="configuring the Spark image")
        buildah.run("commit", "--rm", container, name, what="committing the Spark image")
    except BaseException:
        subprocess.run([*buildah.global_args, "rm", container], capture_output=True, check=False)
        raise
    progress(f"built {name} in {time.monotonic() - started:.0f} s")
    return name


def ensure(paths: SandboxPaths, progress: Progress) -> str:
    """The image in the real node's containerd (built and imported when missing). Returns its name."""
    name = image_name()
    if name in realnode.ctr(paths, "images", "ls", "-q").stdout.split():
        return name
    build(paths, progress)
    realnode.import_buildah_image(paths, name, progress)
    _drop_older_archives(paths, name)
    return name


def _drop_older_archives(paths: SandboxPaths, current: str) -> None:
    """Archives of earlier recipes (about 0.5 GB each) are never read again."""
    keep = current.replace("/", "_").replace(":", "_")
    for old in image_build.images_dir(paths).glob(f"{REPOSITORY.replace('/', '_')}_*"):
        if not old.name.startswith(keep + "."):
            old.unlink(missing_ok=True)
