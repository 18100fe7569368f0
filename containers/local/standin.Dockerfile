# The stand-ins of the local run (containers/local/run) for what cannot be installed here:
# step-ca with the step CLI (standin/step-ca-entrypoint, step_ca_server.py, step), cloudflared
# (standin/cloudflared), and the test's fake upstream API (standin/fake_api.py). One image, on
# a Debian base made from Debian's packages (BASE_IMAGE), with the host-built slapenir binary
# for `slapenir pki init`. Build context: containers/.
ARG BASE_IMAGE
# hadolint ignore=DL3006
FROM ${BASE_IMAGE}
RUN useradd --system --uid 65532 --home-dir /nonexistent --shell /usr/sbin/nologin nonroot
COPY gateway/prebuilt/slapenir /usr/local/bin/slapenir
COPY local/standin/step local/standin/cloudflared /usr/local/bin/
COPY local/standin/step-ca-entrypoint local/standin/step_ca_server.py local/standin/fake_api.py /usr/local/share/standin/
