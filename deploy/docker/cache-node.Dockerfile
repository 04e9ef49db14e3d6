# syntax=docker/dockerfile:1
# The cache-node image: a static musl binary on distroless/static, run as the nonroot user.
# Build from the workspace root: docker build -f deploy/docker/cache-node.Dockerfile -t tidecache/cache-node .

FROM rust:1.95-alpine AS build
# ring (TLS) and other C dependencies need a C toolchain; musl targets link statically.
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p cache-node --bin cache-node \
 && cp target/release/cache-node /cache-node

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /cache-node /usr/local/bin/cache-node
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/cache-node"]
