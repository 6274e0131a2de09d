# The flashsale server. Migrations are compiled into the binary (sqlx::migrate!), so the image
# needs nothing but the binary; it creates its database and migrates at start-up.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p flashsale-server --bin flashsale \
    && cp target/release/flashsale /usr/local/bin/flashsale

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/flashsale /usr/local/bin/flashsale
USER nobody
ENV FLASHSALE_ADDR=0.0.0.0:8080 FLASHSALE_LOG_FORMAT=json
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/flashsale"]
CMD ["serve"]
