# Shoal's binaries, built on the host (release), on the debootstrap base; the
# same user and default command as compose/Dockerfile's runtime stage.
ARG BASE
FROM ${BASE}
COPY shoal-registry shoal-balancer shoal-coordinator shoal-announcer shoal-gateway shoal /usr/local/bin/
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin shoal
USER shoal
CMD ["shoal", "--help"]
