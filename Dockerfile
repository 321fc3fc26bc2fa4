# The controller image: `shoal up` against the cluster's NATS, workers as processes inside it
# (so it carries the handler libraries too: numpy, tokenizers; models run in shoal-executor).
# Worker images (shoal-handler, shoal-executor), a registry-free build of all images and the
# container launcher: docker/build.sh, docs/containers.md.
FROM python:3.11-slim

WORKDIR /app
# Dependencies first, so a code change rebuilds only the last layers.
COPY pyproject.toml README.md ./
COPY requirements/constraints.txt requirements/
RUN mkdir runtime controller storage \
    && touch runtime/__init__.py controller/__init__.py storage/__init__.py \
    && pip install --no-cache-dir -c requirements/constraints.txt . "docker>=7" "numpy>=1.26" "tokenizers>=0.21" \
    && pip uninstall -y shoal
COPY runtime runtime
COPY controller controller
COPY storage storage
RUN pip install --no-cache-dir --no-deps .
COPY functions functions

# The executors' model cache, mounted into worker containers by compose (the `models`
# volume): a fresh named volume takes this folder's owner, the executors' user (nobody).
RUN mkdir -p /var/cache/shoal/models && chown -R nobody /var/cache/shoal
ENV SHOAL_DATA_DIR=/var/lib/shoal
ENTRYPOINT ["shoal"]
CMD ["up", "--functions", "/app/functions"]
