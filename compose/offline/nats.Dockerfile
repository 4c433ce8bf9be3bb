# nats-server on the debootstrap base: the binary scripts/deps.sh pinned. The
# compose file gives the command (`nats-server --config …`); `wget` is in the base
# for the health check.
ARG BASE
FROM ${BASE}
COPY nats-server /usr/local/bin/nats-server
EXPOSE 4222 6222 8222
CMD ["nats-server"]
