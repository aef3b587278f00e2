# The Sequestra operator image: `sequestra run` as a non-root user on a slim Python base, with exactly the
# runtime dependencies pinned in requirements.lock (generated from the virtualenv the tests ran in).
#   docker build -t ghcr.io/sequestra/sequestra:0.1.0 .
# Pin the base by digest for reproducible builds: --build-arg BASE=python:3.11-slim-bookworm@sha256:...
# Without Docker or a registry, `make image` builds it with buildah on a Debian bookworm python3 base made
# on the machine (sequestra/sandbox/image.py), passed here as BASE; so the instructions below use only what
# both bases have (python3, groupadd/useradd).
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/sequestra
WORKDIR /app
# Dependencies first: this layer stays cached while only the operator's code changes.
COPY requirements.lock ./
RUN /opt/sequestra/bin/pip install --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY operator/ operator/
# crds/, runbooks/ and evals/ are package data (sequestra/shipped.py): COPY keeps the links operator/sequestra/crds,
# runbooks and eval_scenarios as links, and they resolve to these copies when the wheel is built.
COPY runbooks/ runbooks/
COPY evals/ evals/
COPY crds/ crds/
# The image runs the wheel, as `pip install sequestra` would: the operator and its data, without the project's
# test world (sandbox, demo, gauntlet: pyproject.toml). --no-deps: nothing beyond the lock, and `pip check`
# proves it complete.
RUN /opt/sequestra/bin/pip wheel --no-deps --wheel-dir /dist . \
 && /opt/sequestra/bin/pip install --no-deps /dist/sequestra-*.whl \
 && /opt/sequestra/bin/pip check \
 && /opt/sequestra/bin/python -m compileall -q /opt/sequestra/lib

FROM ${BASE}
LABEL org.opencontainers.image.title="sequestra" \
      org.opencontainers.image.description="Kubernetes operator that contains misbehaving workloads autonomously and safely" \
      org.opencontainers.image.source="https://github.com/sequestra/sequestra" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 sequestra \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin sequestra
COPY --from=build /opt/sequestra /opt/sequestra
ENV PATH=/opt/sequestra/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
WORKDIR /tmp
USER 10001:10001
# metrics, Alertmanager webhook receiver, liveness
EXPOSE 19102 19103 8080
ENTRYPOINT ["sequestra"]
CMD ["run", "--standalone", "--liveness", "http://0.0.0.0:8080/healthz"]
