# Production sandbox image: Debian slim + python3, git, ripgrep, tini, and the Codex CLI. The supervisor
# is bind-mounted read-only by the provider at /opt/astraforge, so the image needs only python3 to run
# it, plus setpriv (util-linux) and env (coreutils), both essential in Debian, to start commands as uid 1000.
# The provider starts the container as root with a few capabilities (the supervisor's); USER below
# is only the default for other uses of the image.
# (Tests build the same content from a debootstrap rootfs: deploy/local/rootfs.sh, which names the
# same Codex release.)

# The Codex CLI: only the static musl binary of the npm package for the target platform (no
# node_modules, no node in the image). `npm pack` fetches that one package, checked against the
# registry's integrity hash.
FROM node:22-bookworm-slim AS codex
ARG CODEX_VERSION=0.171.0
ARG TARGETARCH
RUN set -eu; \
    case "${TARGETARCH:-amd64}" in \
      amd64) package=linux-x64; triple=x86_64-unknown-linux-musl ;; \
      arm64) package=linux-arm64; triple=aarch64-unknown-linux-musl ;; \
      *) echo "no Codex CLI build for ${TARGETARCH}" >&2; exit 1 ;; \
    esac; \
    cd /tmp; \
    npm pack --silent "@openai/codex@${CODEX_VERSION}-${package}" >/dev/null; \
    tar -xzf openai-codex-*.tgz "package/vendor/${triple}/bin/codex"; \
    install -m 0755 "package/vendor/${triple}/bin/codex" /codex; \
    test "$(/codex --version)" = "codex-cli ${CODEX_VERSION}"

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python-is-python3 git ca-certificates ripgrep tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd -u 1000 -m -d /home/sandbox -s /bin/bash sandbox \
 && mkdir -p /workspace /run/astraforge /opt/astraforge
COPY --from=codex /codex /usr/local/bin/codex
USER 1000:1000
WORKDIR /workspace
ENV HOME=/home/sandbox
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["python3", "/opt/astraforge/supervisor.py", "/run/astraforge/supervisor.sock"]
