# CPU serving image for deploy/kubernetes/overlays/cpu: the project's launcher with the Triton 2.51 build of
# the nvidia-pytriton wheel (the same server the tests run), the encoder under OpenVINO.
#
#   docker build -f deploy/cpu.Dockerfile -t spin-ocr-cpu .
#   docker run -p 8000-8002:8000-8002 spin-ocr-cpu --address=0.0.0.0      # builds the repository at start
#
# No weights are baked in: the Kubernetes init container builds the repository from the mounted checkpoint.
FROM python:3.11-slim-bookworm
# The Python-backend stub embeds libpython3.11: this image's own shared one (/usr/local/lib), the same
# interpreter the packages are installed for. OpenVINO wants libgomp.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -c "import ctypes.util, sys; sys.exit(ctypes.util.find_library('python3.11') is None)"
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
WORKDIR /opt/spin/src
COPY pyproject.toml ./
COPY client client
COPY spinrec spinrec
COPY builders builders
COPY model_repository model_repository
# The client (spinrec-client, ./client) owns the serving contract the package imports: named in the same command.
RUN python3 -m pip install -e ./client -e ".[serve]"
EXPOSE 8000 8001 8002
ENTRYPOINT ["python3", "-m", "spinrec.serving.launch"]
