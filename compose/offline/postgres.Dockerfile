# Debian's PostgreSQL 15 on the debootstrap base, started as the official
# `postgres` image is: POSTGRES_USER, POSTGRES_PASSWORD and POSTGRES_DB create the
# role and database on first start, data in /var/lib/postgresql/data.
ARG BASE
FROM ${BASE}
ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN chmod 755 /usr/local/bin/docker-entrypoint.sh \
 && mkdir -p /var/run/postgresql "$PGDATA" \
 && chown -R postgres:postgres /var/run/postgresql /var/lib/postgresql
VOLUME /var/lib/postgresql/data
EXPOSE 5432
# Fast shutdown, as the official image.
STOPSIGNAL SIGINT
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]
