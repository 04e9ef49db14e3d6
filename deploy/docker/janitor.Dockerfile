# syntax=docker/dockerfile:1
# The janitor image: a static musl binary on distroless/static, run as the nonroot user.
# Build from the workspace root: docker build -f deploy/docker/janitor.Dockerfile -t tidecache/janitor .

FROM rust:1.95-alpine AS build
# ring (TLS) and other C dependencies need a C toolchain; musl targets link statically.
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p janitor --bin janitor \
 && cp target/release/janitor /janitor

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /janitor /usr/local/bin/janitor
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/janitor"]
