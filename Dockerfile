# The eddyline image of the worker and the collector (used by docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY eddyline eddyline
COPY schemas schemas
COPY streams streams
COPY privacy privacy
COPY online_learning online_learning
COPY consumers consumers
RUN pip install --no-cache-dir '.[worker,query,collector]'
EXPOSE 6066 8088
CMD ["eddyline", "worker", "run"]
