# The agent image of the local run (containers/local/run), built where no registry can be
# reached: a Debian base made from Debian's packages (BASE_IMAGE, by the run script) instead of
# Wolfi, Debian's s6 instead of s6-overlay (standin/s6-overlay-init runs the same service
# directories in the same order), and the stand-in `step`. The services, the agent, the
# health check and the environment are containers/agent's, copied unchanged.
# Build context: containers/.
ARG BASE_IMAGE
# hadolint ignore=DL3006
FROM ${BASE_IMAGE}
RUN useradd --uid 10000 --home-dir /home/agent --create-home --shell /bin/sh agent \
 && install -d -o agent -g agent -m 0700 /home/agent/certs \
 && install -d -o agent -g agent -m 0755 /home/agent/logs \
 && mkdir -p /command \
 && for tool in s6-svstat s6-svc s6-svscanctl s6-setuidgid; do ln -s "/usr/bin/$tool" "/command/$tool"; done
COPY agent/rootfs/ /
COPY agent/app/ /app/
COPY agent/verify.sh /usr/local/bin/verify.sh
COPY local/standin/step /usr/bin/step
COPY local/standin/s6-overlay-init /init
RUN chmod 0755 /etc/s6-overlay/scripts/init-certs /usr/local/bin/verify.sh /usr/local/bin/agent-healthcheck
# containers/agent/Dockerfile's environment, with Debian's python3.
ENV S6_KEEP_ENV=1 \
    S6_BEHAVIOUR_IF_STAGE2_FAILS=2 \
    S6_CMD_WAIT_FOR_SERVICES_MAXTIME=0 \
    S6_KILL_GRACETIME=5000 \
    AGENT_USER=agent \
    AGENT_PYTHON=python3 \
    AGENT_APP=/app/agent.py \
    AGENT_CERT_DIR=/home/agent/certs \
    SSL_CERT_FILE=/home/agent/certs/ca-bundle.crt \
    REQUESTS_CA_BUNDLE=/home/agent/certs/ca-bundle.crt \
    PIP_CERT=/home/agent/certs/ca-bundle.crt \
    GIT_SSL_CAINFO=/home/agent/certs/ca-bundle.crt \
    NODE_EXTRA_CA_CERTS=/home/agent/certs/root_ca.crt \
    CURL_HOME=/etc/slapenir \
    VERIFY_PYTHON=python3
ENTRYPOINT ["/init"]
