# qvault in a small runtime image: `docker build -t qvault .`
# Multi-stage: the build stage compiles a release binary; the runtime stage holds only that
# binary, CA certificates (S3/Qdrant over TLS) and a non-root user.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin qvault

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /home/qvault --create-home qvault
COPY --from=build /src/target/release/qvault /usr/local/bin/qvault
USER 10001
# The local index is a cache: point it at a volume (or an emptyDir) to keep it between runs.
ENV QVAULT_CACHE_DIR=/home/qvault/.cache/qvault
ENTRYPOINT ["/usr/local/bin/qvault"]
CMD ["--help"]
