# Production sandbox image: Debian slim + python3, git, ripgrep, tini. The supervisor is bind-mounted
# read-only by the provider at /opt/astraforge, so the image needs only python3 to run it, plus
# setpriv (util-linux) and env (coreutils), both essential in Debian, to start commands as uid 1000.
# The provider starts the container as root with a few capabilities (the supervisor's); USER below
# is only the default for other uses of the image.
# (Tests build the same content from a debootstrap rootfs: deploy/local/rootfs.sh.)
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python-is-python3 git ca-certificates ripgrep tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd -u 1000 -m -d /home/sandbox -s /bin/bash sandbox \
 && mkdir -p /workspace /run/astraforge /opt/astraforge
USER 1000:1000
WORKDIR /workspace
ENV HOME=/home/sandbox
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["python3", "/opt/astraforge/supervisor.py", "/run/astraforge/supervisor.sock"]
