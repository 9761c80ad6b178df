#!/usr/bin/env bash
# The test suite, slow end-to-end tests included (CI runs this through .ci/run).
#
# The acceptance tests on the trained default (GGUF parity on held-out prompts, held-out accuracy
# after quantization, the default's held-out score) read outputs/tiny and outputs/world. When
# they are missing, the default is trained first (python train/run.py, about 10 minutes on 2 cores),
# exactly as `make main` does. ALLAVA_TEST_NO_TRAIN=1 skips that (those tests then skip).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source .venv/bin/activate
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [[ "${ALLAVA_TEST_NO_TRAIN:-0}" != 1 && ! -f outputs/tiny/eval_results.json ]]; then
  echo "test: training the default (outputs/tiny) for the trained-model acceptance tests"
  python train/run.py --output-dir outputs/tiny --data-root outputs/world
fi
python -m pytest -q -p no:cacheprovider "$@"
