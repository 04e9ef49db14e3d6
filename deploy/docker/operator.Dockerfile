# syntax=docker/dockerfile:1
# The operator image: a static musl binary on distroless/static, run as the nonroot user.
# Build from the workspace root: docker build -f deploy/docker/operator.Dockerfile -t tidecache/operator .

FROM rust:1.95-alpine AS build
# ring (TLS) and other C dependencies need a C toolchain; musl targets link statically.
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p operator --bin operator \
 && cp target/release/operator /operator

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /operator /usr/local/bin/operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/operator"]
