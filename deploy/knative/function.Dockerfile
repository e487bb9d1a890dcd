# A Python function's container: the xdt runtime with the function's folder (its handler's
# module, and a requirements.txt if it has one). One image per function, named after it, built
# from the repository's root (for xdt itself) with the function's folder, wherever it is, as the
# build context named "function" (BuildKit, docker 23 and later):
#
#   docker build -f deploy/knative/function.Dockerfile --build-context function=examples/wordcount \
#       -t REGISTRY/wordcount:TAG .
#   docker push REGISTRY/wordcount:TAG
#
# `xdt knative render` gives the runtime its arguments (the handler, the sockets, the peer's
# uid); tests/knative/test_render.py holds this file to what it renders.
FROM python:3.11-slim
COPY pyproject.toml README.md /src/xdt/
COPY src /src/xdt/src
RUN pip install --no-cache-dir /src/xdt && rm -rf /src/xdt
COPY --from=function . /function
RUN if [ -f /function/requirements.txt ]; then pip install --no-cache-dir -r /function/requirements.txt; fi
USER 10002:10000
WORKDIR /function
ENTRYPOINT ["python", "-m", "xdt.runtime"]
