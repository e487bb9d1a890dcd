# The xdt sidecar: the serving container of every function's pod (see docs/knative.md).
# Build it from the repository's root and push it where `xdt knative render --registry` says:
#
#   docker build -f deploy/knative/sidecar.Dockerfile -t REGISTRY/xdt-sidecar:TAG .
#   docker push REGISTRY/xdt-sidecar:TAG
#
# What the pod gives it (ports, the sockets' folder, the key ring's Secret, its uid and group)
# is fixed in xdt.sidecar.knative, and tests/knative/test_render.py holds this file to it.
FROM python:3.11-slim
COPY pyproject.toml README.md /src/xdt/
COPY src /src/xdt/src
RUN pip install --no-cache-dir /src/xdt && rm -rf /src/xdt
# Non-root, in the group the function's container shares for the sockets in /var/run/xdt.
USER 10001:10000
# 8080: its ingress ($PORT, behind Knative's queue-proxy); 8079: the object server.
EXPOSE 8080 8079
ENTRYPOINT ["python", "-m", "xdt.sidecar", "--knative"]
