# The scheduler image: the scheduler is PID 1, configured by SCHEDULER_CONFIG, writing to /data.
#
#   docker build -t cron-container-scheduler .                    # online: python:3.11-slim + index
#   scripts/build-image.sh --debootstrap-base                      # offline: local base + wheelhouse/
#
# BASE_IMAGE must provide python3 (3.11, matching the wheels) with the venv module; the official
# slim image does, and so does the debootstrap base of .ci/docker-up.sh --base.  Both stages use
# the same base, so the virtualenv built in the first runs unchanged in the second.
#
# Dependencies come from requirements.lock only.  With INSTALL_FROM=auto (the default) they are
# installed from the wheels in wheelhouse/ when the build context has any (no index is contacted:
# --no-index), else from the package index.  Layers are ordered so that a code change rebuilds only
# the last few small layers, never the dependency install.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# --- builder: the virtualenv with the pinned dependencies ---------------------------------------
FROM ${BASE_IMAGE} AS builder
ARG INSTALL_FROM=auto
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/venv
# The glob makes wheelhouse/ optional: when present, its wheels land beside the lock in /build.
COPY requirements.lock wheelhouse* /build/
RUN set -eu; \
    wheels=$(find /build -maxdepth 1 -name '*.whl' | wc -l); \
    case "$INSTALL_FROM" in \
      auto) if [ "$wheels" -gt 0 ]; then mode=wheelhouse; else mode=index; fi ;; \
      wheelhouse|index) mode="$INSTALL_FROM" ;; \
      *) echo "INSTALL_FROM must be auto, wheelhouse or index" >&2; exit 2 ;; \
    esac; \
    if [ "$mode" = wheelhouse ]; then \
      echo "installing requirements.lock offline from $wheels wheel(s)"; \
      /opt/venv/bin/pip install --no-index --find-links /build --only-binary :all: -r /build/requirements.lock; \
    else \
      echo "installing requirements.lock from the package index"; \
      /opt/venv/bin/pip install --only-binary :all: -r /build/requirements.lock; \
    fi; \
    /opt/venv/bin/pip check; \
    /opt/venv/bin/pip uninstall -q -y pip setuptools; \
    site=$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
    # Nothing at run time needs test suites, C headers or Cython sources.
    find "$site" -depth -type d -name tests -exec rm -rf {} +; \
    find "$site" \( -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' -o -name '*.h' -o -name '*.hpp' \) -delete; \
    rm -rf "$site/pyarrow/include" "$site/pyarrow/src" "$site"/pyarrow/_pyarrow_cpp_tests*; \
    # Arrow Flight RPC and the S3 filesystem are never used (pyarrow imports both only on demand);
    # together they are about a sixth of the image.
    rm -f "$site"/pyarrow/*flight* "$site"/pyarrow/libarrow_s3.so* "$site"/pyarrow/_s3fs*; \
    # The wheel ships each of these libraries three times; the loader asks only for .so.<ABI>.
    for lib in "$site"/pyarrow/libarrow_python*.so.*.*.*; do \
      [ -e "$lib" ] || continue; base="${lib%.so.*}"; abi="${lib#"$base".so.}"; abi="${abi%%.*}"; \
      rm -f "$base.so" "$lib"; ln -s "$(basename "$base").so.$abi" "$base.so"; \
    done; \
    rm -rf /build
# The console scripts, as pip would write them for the project (the code itself is in /app).
RUN printf '#!/opt/venv/bin/python\nimport sys\nfrom scheduler.cli import main\nsys.exit(main())\n' \
      > /opt/venv/bin/scheduler; \
    printf '#!/opt/venv/bin/python\nimport sys\nfrom scheduler.cli import run_job_main\nsys.exit(run_job_main())\n' \
      > /opt/venv/bin/run-job; \
    chmod 0755 /opt/venv/bin/scheduler /opt/venv/bin/run-job

# --- runtime: the base, the virtualenv, the code; no pip, no compilers ------------------------
FROM ${BASE_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LANG=C.UTF-8 \
    SCHEDULER_CONFIG=/app/config \
    SCHEDULER_DATA_DIR=/data
# A fixed, unprivileged uid/gid; /data belongs to it so a fresh named volume does too.
RUN echo 'scheduler:x:10001:10001:scheduler:/app:/usr/sbin/nologin' >> /etc/passwd \
    && echo 'scheduler:x:10001:' >> /etc/group \
    && mkdir -p /data && chown 10001:10001 /data && chmod 0750 /data
COPY --from=builder /opt/venv /opt/venv
COPY scheduler/ /app/scheduler/
COPY jobs/ /app/jobs/
COPY config/ /app/config/
# Byte-compile now: under --read-only nothing can write __pycache__ later, and every run is a
# fresh interpreter.
RUN python3 -m compileall -q -j 0 /app/scheduler /app/jobs
WORKDIR /app
USER 10001:10001
VOLUME /data
# The daemon refreshes a heartbeat at least every 30 s; `scheduler health` fails after 65 s.
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
    CMD ["/opt/venv/bin/scheduler", "health"]
STOPSIGNAL SIGTERM
# Exec form: the scheduler itself is PID 1 and receives `docker stop`'s SIGTERM.
ENTRYPOINT ["/opt/venv/bin/scheduler"]
CMD ["run"]

# Per-build values last, so they never invalidate the layers above.
ARG BASE_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="cron-container-scheduler" \
      org.opencontainers.image.description="A PID-1 cron-container scheduler for recurring data jobs" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"
