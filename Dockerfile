# torchcell-search image. CPU by default; for GPUs build with a CUDA base and torch index:
#   docker build --build-arg BASE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime \
#                --build-arg TORCH_SPEC="" -t torchcell-search:cuda .
# (the PyTorch base already carries a CUDA torch, so TORCH_SPEC is left empty).
ARG BASE=python:3.11-slim
FROM ${BASE}
ARG TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /opt/torchcell-search
COPY pyproject.toml README.md ./
COPY torchcell_search ./torchcell_search
COPY configs ./configs
RUN if [ -n "$TORCH_SPEC" ]; then pip install $TORCH_SPEC; fi \
 && pip install .
# Studies and caches live outside the image: mount a volume and point the storage at it.
ENV TORCHCELL_SEARCH_CACHE=/data/cache
VOLUME ["/data"]
ENTRYPOINT ["torchcell-search"]
CMD ["--help"]
