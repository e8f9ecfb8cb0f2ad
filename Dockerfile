# ringcore in a container: `docker build -t ringcore .`
#
# Docker's default seccomp profile (25.0 and later) denies io_uring; ringcore
# then serves through epoll and says so on stderr. To serve through
# io_uring, run with the profile in deploy/docker (an allow-list of exactly
# what ringcore calls, io_uring included):
#
#   docker run --rm --security-opt seccomp=deploy/docker/seccomp-ringcore.json \
#     -p 65432:65432 -p 65432:65432/udp -p 12345:12345 -p 8888:8888/udp \
#     -p 5555:5555 -p 5555:5555/udp -p 8080:8080 -p 9100:9100 \
#     --ulimit memlock=-1 ringcore

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p ringcore -p loadgen

FROM debian:bookworm-slim
COPY --from=build /src/target/release/ringcore /src/target/release/loadgen /usr/local/bin/
# The chapter's services, and the metrics endpoint.
EXPOSE 65432/tcp 65432/udp 12345/tcp 8888/udp 5555/tcp 5555/udp 8080/tcp 9100/tcp
# Unprivileged: the chapter's ports are all above 1023.
USER 65534:65534
ENTRYPOINT ["ringcore"]
# In a container the services must listen beyond loopback.
CMD ["--bind", "0.0.0.0", "--metrics", "0.0.0.0:9100"]
