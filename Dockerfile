# kiln's own image: the kiln binary on Debian 12 with the few tools it runs (pasta for RUN
# steps' network, git for `ADD` of repositories, newuidmap/newgidmap for rootless mode) and
# Debian's CA certificates. Built by kiln itself from a release binary, never compiled here:
#
#   cargo build --release && kiln build -t kiln .
#   kiln build --build-context bin=DIR -t kiln .     # DIR holds a prebuilt `kiln`
#
# Run it as a CI builder (README, "kiln in CI"):
#
#   docker run --rm -v "$PWD":/workspace -v ~/.docker:/root/.docker:ro kiln \
#       build --push -t REGISTRY/app:1 /workspace

ARG BASE=debian:bookworm-slim

# The binary: `target/release/kiln` of this checkout (the only file .dockerignore lets in), or
# a directory given with `--build-context bin=DIR`, which replaces this stage.
FROM scratch AS bin
COPY target/release/kiln /kiln

FROM ${BASE}
ARG VERSION=0.1.0
ARG BASE
# Over the base's own sources (apt checks the signatures). Manuals, documentation and
# translations are left out as Debian's slim images do (copyright files are kept).
RUN printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
        'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' \
        'path-exclude /usr/share/locale/*' > /etc/dpkg/dpkg.cfg.d/kiln-image-slim \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        passt git ca-certificates uidmap \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb /var/cache/debconf/*-old \
        /var/log/apt /var/log/dpkg.log /var/log/alternatives.log
# A non-root user with subordinate ids, for rootless mode (`runAsUser: 1000` where the node
# allows user namespaces); root in a default container gets the unprivileged mode.
RUN useradd --uid 1000 --create-home --shell /bin/sh kiln \
    && echo "kiln:100000:65536" > /etc/subuid \
    && echo "kiln:100000:65536" > /etc/subgid \
    && install -d -m 0700 /var/lib/kiln /workspace
COPY --from=bin --chmod=0755 /kiln /usr/local/bin/kiln
# The store: a volume, so layers are written to the volume's filesystem, not the container's
# overlay, and disappear with `docker run --rm`.
ENV KILN_ROOT=/var/lib/kiln
VOLUME /var/lib/kiln
WORKDIR /workspace
LABEL org.opencontainers.image.title="kiln" \
      org.opencontainers.image.description="A Dockerfile build engine with a content-addressed layer cache, that can also run the images it builds" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${BASE}"
ENTRYPOINT ["kiln"]
CMD ["--help"]
